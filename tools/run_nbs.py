"""Execute notebooks in place, saving their outputs, so the docs site shows real results.

Usage: python tools/run_nbs.py PATH [PATH ...]   (a notebook, or a folder of notebooks)
Cells that call `nbdev_export(` are skipped (as `nbdev_test` does), and so are cells flagged `#| gpu` on a machine
without CUDA (`make test-gpu` runs them); notebooks whose name starts with `_` are scratch.
The scoreboard runs last (it reads the other experiments' results). Stops at the first failing notebook with its traceback, so a broken experiment never publishes stale figures.
Figures are saved at normal resolution and re-encoded as 256-colour palette PNGs, so committed notebooks stay small
(tests/test_notebooks.py keeps each under 1 MB) and a figure that did not change gives the same bytes at every run.
"""
import base64, io, sys, time, traceback
from pathlib import Path
from execnb.shell import CaptureShell
from nbdev.clean import clean_nb
from execnb.nbio import read_nb, write_nb

def _has_cuda()->bool:
    import torch
    return torch.cuda.is_available()

def _skip(cell):
    if cell.cell_type != 'code': return False
    if 'nbdev_export' + '(' in cell.source: return True
    flags = [l.strip() for l in cell.source.splitlines() if l.strip().startswith('#|')]
    return any(f.split(':')[0].replace('#|', '').split() == ['gpu'] for f in flags) and not _has_cuda()

def compact_png(b64:str)->str:
    "A base64 PNG re-encoded as an optimised 256-colour palette image on white (deterministic: same input, same bytes)"
    from PIL import Image
    im = Image.open(io.BytesIO(base64.b64decode(b64)))
    if im.mode in ('RGBA', 'LA', 'P'):
        im = im.convert('RGBA'); bg = Image.new('RGBA', im.size, 'white'); im = Image.alpha_composite(bg, im)
    im = im.convert('RGB').quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO(); im.save(out, 'PNG', optimize=True)
    return base64.b64encode(out.getvalue()).decode()

def compact_outputs(nb):
    "Re-encode every PNG output of `nb` with `compact_png`"
    for c in nb.cells:
        for o in c.get('outputs', []):
            data = o.get('data', {})
            if 'image/png' in data:
                src = data['image/png']
                data['image/png'] = compact_png(''.join(src) if isinstance(src, list) else src)

def run_nb(path:Path):
    "Execute `path` top to bottom and write it back with outputs; raise on the first error"
    t0 = time.time()
    shell = CaptureShell(mpl_format='png')
    nb = read_nb(path)
    shell.set_path(path.parent.resolve())
    shell._fname = path
    shell.run_all(nb, exc_stop=True, preproc=_skip)
    compact_outputs(nb)
    clean_nb(nb)
    write_nb(nb, path)
    return time.time() - t0

def _nbs(args):
    "The notebooks to run, in order; the scoreboard reads the other experiments' results, so it runs after them"
    out = []
    for a in map(Path, args):
        if a.is_dir(): out += sorted(p for p in a.rglob('*.ipynb') if not p.name.startswith('_') and '.ipynb_checkpoints' not in p.parts)
        elif a.suffix == '.ipynb': out.append(a)
        else: raise SystemExit(f"not a notebook or folder: {a}")
    return sorted(out, key=lambda p: 'scoreboard' in p.stem)  # stable: everything else keeps its order

if __name__ == '__main__':
    paths = list(_nbs(sys.argv[1:]))
    if not paths: print("no notebooks to run in", ' '.join(sys.argv[1:]))
    total = 0.
    for p in paths:
        print(f"running {p} ...", flush=True)
        try: dt = run_nb(p)
        except Exception as e:
            traceback.print_exc()
            raise SystemExit(f"FAILED {p}: {type(e).__name__}: {e}")
        total += dt
        print(f"  done in {dt:.1f} s", flush=True)
    print(f"ran {len(paths)} notebooks in {total:.1f} s")
