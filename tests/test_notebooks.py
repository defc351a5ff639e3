"""House rules for the notebooks that nbdev and the docs build rely on."""
import ast, json
from pathlib import Path
import pytest

NBS = Path(__file__).resolve().parent.parent/'nbs'
NOTEBOOKS = sorted(p for p in NBS.rglob('*.ipynb') if not p.name.startswith('_') and '.ipynb_checkpoints' not in p.parts)

def _cells(p): return json.loads(p.read_text())['cells']

def _directives(src): return {l[3:].strip().split(':')[0].split()[0] for l in src.splitlines() if l.startswith('#| ') and l[3:].strip()}

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.relative_to(NBS).as_posix())
def test_imports_in_their_own_cells(nb):
    """nbdev's doc processing executes every cell that contains an import (nested ones too): such cells must hold
    imports only, or building the docs would run the notebook's computations (and fail on its tests)."""
    bad = []
    for i, c in enumerate(_cells(nb)):
        src = ''.join(c['source'])
        if c['cell_type'] != 'code' or not src.strip(): continue
        if _directives(src) & {'export', 'exports', 'exporti', 'exec_doc'}: continue
        if 'nbdev_export' + '(' in src: continue
        if any(l.strip().startswith('%') for l in src.splitlines()): continue
        tree = ast.parse(src)
        if not any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(tree)): continue
        if not all(isinstance(s, (ast.Import, ast.ImportFrom)) for s in tree.body): bad.append(i)
    assert not bad, f"{nb.name}: cells {bad} mix imports with other code; move the imports to an import cell"

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.relative_to(NBS).as_posix())
def test_title_cell(nb):
    "Every notebook opens with a `# title` markdown cell (the page title in the docs)"
    first = _cells(nb)[0]
    assert first['cell_type'] == 'markdown' and ''.join(first['source']).lstrip().startswith('# '), nb.name

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.relative_to(NBS).as_posix())
def test_committed_outputs_are_small(nb):
    "Committed outputs are part of the docs, not a dump: every notebook stays under 1 MB (tools/run_nbs.py compacts figures)"
    size = nb.stat().st_size
    assert size < 1_000_000, f"{nb.name} is {size / 1e6:.2f} MB; re-run it with tools/run_nbs.py (normal-resolution, palette PNGs)"

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=lambda p: p.relative_to(NBS).as_posix())
def test_tests_never_overwrite_published_results(nb):
    """`results/*.csv` hold what `make reproduce` measured. A cell that writes there must carry the `#| results` flag,
    which `settings.ini`'s `tst_flags` lists, so `nbdev_test` (hence `make test`) skips it and a test run cannot
    replace the published numbers with its own."""
    from configparser import ConfigParser
    cfg = ConfigParser(); cfg.read(NBS.parent/'settings.ini')
    assert 'results' in cfg['DEFAULT']['tst_flags'].split(), "settings.ini: tst_flags must list `results`"
    bad = [i for i, c in enumerate(_cells(nb)) if c['cell_type'] == 'code'
           and "'results'" in (src := ''.join(c['source'])) and any(w in src for w in ('to_csv(', 'write_text(', 'to_parquet(', 'savefig('))
           and 'results' not in _directives(src)]
    assert not bad, f"{nb.name}: cells {bad} write under results/ without `#| results`; nbdev_test would overwrite the published CSV"
