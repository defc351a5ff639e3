"""Benchmark: cosine relative projection of 1,000,000 x 256 float32 samples onto 1,024 anchors, on CPU.

Prints
* throughput of `relative_projection` as a ratio of a bare `torch.mm` of the same shapes, measured in the same process
  and interleaved (best of `--repeats` runs each), target >= 0.8;
* peak memory of each case, each measured in a fresh subprocess: the resident set before the call (inputs loaded), the
  peak during it (VmHWM, reset just before the call through /proc/self/clear_refs), the output size, and the overhead
  beyond inputs + output, target: a bounded chunk, no full intermediate copies;
* a last line `RESULT ...` with those two figures, for scripts to read.

Usage: python benchmarks/bench_relative.py [--n 1000000] [--d 256] [--m 1024] [--repeats 2]
"""
import argparse, json, subprocess, sys, time
import torch

MiB = 2 ** 20

def _status(key:str)->int:
    "A memory figure of this process from /proc/self/status, in bytes"
    for line in open('/proc/self/status'):
        if line.startswith(key + ':'): return int(line.split()[1]) * 1024
    raise KeyError(key)

def _inputs(n:int, d:int, m:int):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=g), torch.randn(m, d, generator=g)

def _cases():
    from latent_comm.relative import relative_projection
    return {'mm': lambda x, a: torch.mm(x, a.T),
            'relative_projection': lambda x, a: relative_projection(x, a, 'cosine')}

def memory_case(case:str, n:int, d:int, m:int)->dict:
    "Run one case once in this (fresh) process and report its memory figures"
    x, a = _inputs(n, d, m)
    f = _cases()[case]
    f(x[:1000], a)  # warm up: load kernels, allocator pools
    before = _status('VmRSS')
    with open('/proc/self/clear_refs', 'w') as fh: fh.write('5')  # reset the peak (VmHWM) to the current RSS
    out = f(x, a)
    peak = _status('VmHWM')
    return dict(case=case, rss_before=before, peak=peak, output=out.numel() * out.element_size())

def timing(n:int, d:int, m:int, repeats:int)->dict:
    "Best wall time of each case over `repeats` interleaved runs"
    x, a = _inputs(n, d, m)
    cases, best = _cases(), {}
    for f in cases.values(): f(x[:1000], a)
    for _ in range(repeats):
        for name, f in cases.items():
            t0 = time.perf_counter(); out = f(x, a); dt = time.perf_counter() - t0
            del out
            best[name] = min(best.get(name, float('inf')), dt)
    return best

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n', type=int, default=1_000_000); p.add_argument('--d', type=int, default=256)
    p.add_argument('--m', type=int, default=1024); p.add_argument('--repeats', type=int, default=2)
    p.add_argument('--memory-case', help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_case:
        print(json.dumps(memory_case(args.memory_case, args.n, args.d, args.m))); return

    n, d, m = args.n, args.d, args.m
    print(f"cosine relative projection, x {n:,} x {d} float32 onto {m:,} anchors, CPU, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    best = timing(n, d, m, args.repeats)
    flop = 2 * n * d * m
    for name, t in best.items(): print(f"  {name:>20}: {t:7.3f} s  ({flop / t / 1e9:6.1f} GFLOP/s, {n / t / 1e6:5.2f} M rows/s)")
    print(f"  throughput ratio relative_projection / torch.mm: {best['mm'] / best['relative_projection']:.3f}  (target >= 0.8)")

    inputs, overhead = (n * d + m * d) * 4, {}
    print(f"peak memory, one fresh process per case (inputs {inputs / MiB:,.0f} MiB):")
    for case in ('mm', 'relative_projection'):
        r = json.loads(subprocess.run([sys.executable, __file__, '--memory-case', case, '--n', str(n), '--d', str(d),
                                       '--m', str(m)], check=True, capture_output=True, text=True).stdout)
        extra = r['peak'] - r['rss_before']
        print(f"  {case:>20}: output {r['output'] / MiB:,.0f} MiB, RSS before call {r['rss_before'] / MiB:,.0f} MiB, "
              f"peak {r['peak'] / MiB:,.0f} MiB, growth during call {extra / MiB:,.0f} MiB, "
              f"overhead beyond output {(extra - r['output']) / MiB:,.0f} MiB")
        overhead[case] = (extra - r['output']) / MiB
    print(f"RESULT bench_relative throughput_ratio={best['mm'] / best['relative_projection']:.3f} "
          f"overhead_mib={overhead['relative_projection']:.0f} mm_overhead_mib={overhead['mm']:.0f}")

if __name__ == '__main__': main()
