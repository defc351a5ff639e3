"""Benchmark: fitting Procrustes on 50,000 anchor pairs of dimension 768, against the bare maths and against latentis.

Two targets, each printed as a RESULT line ending in 'met' or 'NOT met':

1. the default `Translator().fit` takes at most 1.5 times the bare `x.T @ y` plus `torch.linalg.svd` of the (768, 768)
   result, measured in the same run;
2. every Procrustes fit measured here is no slower than latentis 0.0.8 doing the same work on the same inputs in the
   same process: ratio of the medians, ours / latentis, at most 1. Two of the pairs (the bare function, and no
   transforms) do exactly the same arithmetic on both sides (x^T y, one SVD, one product), so the best possible
   outcome there is a tie: an A/A control (the baseline timed twice in every repeat) measures how far two runs of
   identical work differ on this machine, and a ratio above 1 by no more than that noise is reported as
   'met (tie within A/A noise)', never as plain 'met'.

The latentis side of each pair is its own `Translator` (or `svd_align_state` for the bare function) with the matching
transforms: `Centering()`, `Procrustes()` (per-dimension standard scaling, the paper's preset), no transforms, and for
our default (centring then one isotropic scale per space, which latentis 0.0.8 does not ship) a `SimpleTransform` in
the style of latentis' own `standard_scaling_*` functions; latentis' `ZeroPadding` does nothing on these square inputs.
Before any timing, each pair is checked to produce the same map (the same work); the run stops if not.

Timings: the median of --repeats runs (at least 5). Within a repeat the baseline, then each pair back to back, ours and
latentis in alternating order from one repeat to the next, so a busy machine slows both alike. The spread column gives
the lowest and highest per-repeat ratio. `--clock wall` (the default) times wall-clock seconds; `--clock cpu` the
process's CPU seconds (all threads), which a process waiting for a core does not accumulate: on a crowded machine,
`--threads 1 --clock cpu` gives figures close to those of a quiet core, where wall-clock ratios are mostly noise.

Memory: the extra peak resident memory of each case beyond its inputs, each in a fresh subprocess (VmHWM reset after
the inputs exist; `ru_maxrss` is not used because a child inherits its parent's).

Usage: python benchmarks/bench_translation.py [--n 50000] [--d 768] [--repeats 7] [--threads N] [--clock wall|cpu]
                                              [--no-memory]
Needs the `bench` extra (latentis==0.0.8).
"""
import argparse, gc, math, statistics, subprocess, sys, time
from pathlib import Path
import torch
from latent_comm.core import need
from latent_comm.translation import Translator, procrustes

def _latentis():
    "latentis' translator pieces (imported here only: latentis is a benchmark dependency)"
    need('latentis', 'bench', 'latentis==0.0.8')
    from latentis.transform import SimpleTransform
    from latentis.transform.base import Centering
    from latentis.transform.dim_matcher import ZeroPadding
    from latentis.transform.translate import MatrixAligner, Procrustes, Translator as LTranslator
    from latentis.transform.translate.functional import svd_align_state
    def center_scale_state(x): shift = x.mean(dim=0); return {'shift': shift, 'scale': (x - shift).norm() / math.sqrt(x.shape[0])}
    def center_scale_transform(x, *, shift, scale): return (x - shift) / scale
    def center_scale_inverse(x, *, shift, scale): return x * scale + shift
    center_scale = lambda: SimpleTransform(center_scale_transform, center_scale_state, center_scale_inverse, name='center_scale')
    def translator(t=None): return LTranslator(MatrixAligner('svd_aligner', svd_align_state), x_transform=t and t(),
                                               y_transform=t and t(), dim_matcher=ZeroPadding())
    return {'function': lambda x, y: svd_align_state(x=x, y=y)['matrix'],
            'default': lambda x, y: translator(center_scale).fit(x, y),
            'center': lambda x, y: translator(Centering).fit(x, y),
            'none': lambda x, y: translator().fit(x, y),
            'standard': lambda x, y: Procrustes().fit(x, y)}

OURS = {'function': lambda x, y: procrustes(x, y)[0],
        'default': lambda x, y: Translator().fit(x, y),
        'center': lambda x, y: Translator('procrustes', x_transform='center', y_transform='center').fit(x, y),
        'none': lambda x, y: Translator(x_transform=None, y_transform=None).fit(x, y),
        'standard': lambda x, y: Translator(x_transform='standard', y_transform='standard').fit(x, y)}
LABELS = {'function': 'procrustes() function / svd_align_state', 'default': "default: ('center', 'scale')",
          'center': "x/y_transform='center'", 'none': 'x/y_transform=None', 'standard': "x/y_transform='standard' (paper)"}

def baseline(x, y): return torch.linalg.svd(x.T @ y)

def cases():
    "Every timed case by name: the baseline, then ours and latentis' for each pair"
    theirs = _latentis()
    return {'baseline': baseline, **{f'ours {k}': f for k, f in OURS.items()}, **{f'latentis {k}': f for k, f in theirs.items()}}

def data(n, d):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)

def check_same_work(cs, x, y, rows=2000):
    "Stop unless each pair computes the same map (compared on `rows` translated anchors, or the matrix itself)"
    for k in OURS:
        a, b = cs[f'ours {k}'](x, y), cs[f'latentis {k}'](x, y)
        if k == 'function': pa, pb = a, b
        else: pa, pb = a.transform(x[:rows]), b.transform(x[:rows])[0]
        err = ((pa - pb).norm() / pb.norm()).item()
        if not err < 1e-3: sys.exit(f"ours and latentis differ on '{k}' (relative difference {err:.1e}): not the same work")

def _status_mib(field):
    "A field of /proc/self/status (VmRSS, VmHWM) in MiB"
    for line in open('/proc/self/status'):
        if line.startswith(field + ':'): return int(line.split()[1]) / 1024

def measure_peak(case, n, d):
    "Run in a fresh process: extra peak resident memory (MiB) of one case beyond its inputs"
    x, y = data(n, d)
    f = cases()[case]
    f(x[:64], y[:64])
    with open('/proc/self/clear_refs', 'w') as fh: fh.write('5')  # reset the peak (VmHWM) to the current RSS
    before = _status_mib('VmRSS')
    f(x, y)
    print(_status_mib('VmHWM') - before)

def peak_mib(case, n, d):
    "Extra peak resident memory (MiB) of one case, measured in a fresh subprocess (ru_maxrss would be inherited)"
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import bench_translation as b; "
            f"b.measure_peak({case!r}, {n}, {d})")
    return float(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.split()[-1])

CLOCKS = {'wall': time.perf_counter, 'cpu': time.process_time}

def timed(f, x, y, clock=time.perf_counter):
    gc.collect()
    t0 = clock(); f(x, y); return clock() - t0

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n', type=int, default=50_000); p.add_argument('--d', type=int, default=768)
    p.add_argument('--repeats', type=int, default=7, help='timed runs per case (the median is reported); at least 5')
    p.add_argument('--threads', type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument('--clock', choices=list(CLOCKS), default='wall', help='wall-clock or process CPU seconds')
    p.add_argument('--no-memory', action='store_true', help='skip the peak-memory subprocesses')
    a = p.parse_args()
    if a.repeats < 5: p.error('--repeats must be at least 5 (medians of fewer runs are not worth reporting)')
    if a.threads: torch.set_num_threads(a.threads)
    x, y = data(a.n, a.d)
    cs = cases()
    clock = CLOCKS[a.clock]
    print(f"n={a.n} d={a.d} float32, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {a.repeats} runs, {a.clock} seconds")
    check_same_work(cs, x[:5000], y[:5000])
    for f in cs.values(): f(x[:1000], y[:1000])  # warm up
    times = {k: [] for k in [*cs, 'baseline again']}
    for r in range(a.repeats):
        times['baseline'].append(timed(baseline, x, y, clock))
        times['baseline again'].append(timed(baseline, x, y, clock))  # A/A control: the noise of identical work
        for k in OURS:
            for side in (('ours', 'latentis') if r % 2 == 0 else ('latentis', 'ours')):
                times[f'{side} {k}'].append(timed(cs[f'{side} {k}'], x, y, clock))
    med = {k: statistics.median(v) for k, v in times.items()}
    aa = sorted(abs(b / b2 - 1) for b, b2 in zip(times['baseline'], times['baseline again']))
    noise = max(0.01, aa[int(0.9 * (len(aa) - 1))])  # 90th percentile of the A/A deviation, at least 1%
    mem = {k: '' if a.no_memory else f"   +{peak_mib(k, a.n, a.d):6.0f} MiB" for k in cs}
    print(f"{'baseline: x.T @ y + svd':45s} {med['baseline']:.3f} s{mem['baseline']}")
    print(f"A/A control (baseline vs itself, per repeat): |ratio - 1| up to {aa[-1]:.3f}, 90th percentile {noise:.3f}")
    print(f"{'case':45s} {'ours':>8s} {'latentis':>9s} {'ratio':>6s}  per-repeat ratios (min-max)   extra peak memory (ours, latentis)")
    verdicts = []
    for k, label in LABELS.items():
        ours, theirs = med[f'ours {k}'], med[f'latentis {k}']
        each = sorted(o / t for o, t in zip(times[f'ours {k}'], times[f'latentis {k}']))
        print(f"{label:45s} {ours:7.3f}s {theirs:8.3f}s {ours / theirs:6.2f}  {each[0]:.2f}-{each[-1]:.2f}"
              f"{' ' * 18}{mem[f'ours {k}']}{mem[f'latentis {k}']}")
        verdicts.append((label, ours / theirs))
    r = med['ours default'] / med['baseline']
    how = f"{a.clock}, {torch.get_num_threads()} threads"
    print(f"RESULT: default Translator().fit / (x.T @ y + svd) = {r:.2f} (target <= 1.5: {'met' if r <= 1.5 else 'NOT met'}; {how})")
    for label, q in verdicts:
        v = 'met' if q <= 1.0 else f'met (tie within A/A noise {noise:.2f})' if q <= 1 + noise else 'NOT met'
        print(f"RESULT: ours / latentis 0.0.8, {label} = {q:.3f} (target <= 1.0: {v}; {how})")

if __name__ == '__main__': main()
