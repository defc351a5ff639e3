"""Benchmark: fitting Procrustes on 50,000 anchor pairs of dimension 768.

Baseline, measured in the same run: the bare `x.T @ y` plus `torch.linalg.svd` of the (768, 768) result.
Reported: best-of-N wall time of each case (cases interleaved, so a busy machine slows all alike), the ratio to the
baseline (target <= 1.5 for the default Translator), and the extra peak memory of each case, each measured in a
fresh subprocess from /proc/self/status (VmHWM, reset after the inputs exist; `ru_maxrss` is not used because a
child inherits its parent's peak).

Usage: python benchmarks/bench_translation.py [--n 50000] [--d 768] [--repeats 5]
"""
import argparse, subprocess, sys, time
from pathlib import Path
import torch
from latent_comm.translation import Translator, procrustes

def baseline(x, y): return torch.linalg.svd(x.T @ y)
CASES = {
    'baseline: x.T @ y + svd': baseline,
    'procrustes() function': lambda x, y: procrustes(x, y),
    'Translator(), default center+scale': lambda x, y: Translator().fit(x, y),
    'Translator(x_transform=None, y_transform=None)': lambda x, y: Translator(x_transform=None, y_transform=None).fit(x, y),
    "Translator(x/y_transform='standard') (paper)": lambda x, y: Translator(x_transform='standard', y_transform='standard').fit(x, y),
}

def data(n, d):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)

def _status_mib(field):
    "A field of /proc/self/status (VmRSS, VmHWM) in MiB"
    for line in open('/proc/self/status'):
        if line.startswith(field + ':'): return int(line.split()[1]) / 1024

def measure_peak(case, n, d):
    "Run in a fresh process: extra peak resident memory (MiB) of one case beyond its inputs"
    x, y = data(n, d)
    CASES[case](x[:64], y[:64])
    with open('/proc/self/clear_refs', 'w') as f: f.write('5')  # reset the peak (VmHWM) to the current RSS
    before = _status_mib('VmRSS')
    CASES[case](x, y)
    print(_status_mib('VmHWM') - before)

def peak_mib(case, n, d):
    "Extra peak resident memory (MiB) of one case, measured in a fresh subprocess (ru_maxrss would be inherited)"
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import bench_translation as b; "
            f"b.measure_peak({case!r}, {n}, {d})")
    return float(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n', type=int, default=50_000); p.add_argument('--d', type=int, default=768)
    p.add_argument('--repeats', type=int, default=5); p.add_argument('--no-memory', action='store_true')
    a = p.parse_args()
    x, y = data(a.n, a.d)
    print(f"n={a.n} d={a.d} float32, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for f in CASES.values(): f(x[:1000], y[:1000])  # warm up
    times = {k: [] for k in CASES}
    for _ in range(a.repeats):
        for k, f in CASES.items():
            t0 = time.perf_counter(); f(x, y); times[k].append(time.perf_counter() - t0)
    base = min(times['baseline: x.T @ y + svd'])
    for k, ts in times.items():
        mem = '' if a.no_memory else f"   extra peak memory {peak_mib(k, a.n, a.d):7.1f} MiB"
        print(f"{k:50s} best {min(ts):.3f} s   ratio {min(ts) / base:.2f}{mem}")
    r = min(times['Translator(), default center+scale']) / base
    print(f"RESULT: default Translator().fit / (x.T @ y + svd) = {r:.2f} (target <= 1.5: {'met' if r <= 1.5 else 'NOT met'})")

if __name__ == '__main__': main()
