"""Benchmark: discover parallel anchors between two 100,000 x 300 float32 spaces with no known pair, on CPU.

The related pair is a space with a decaying spectrum (sigma_j ~ j^-1/2) and a rotated (random orthogonal), rescaled,
shifted, noisy (noise energy `--noise` times the signal's) and shuffled copy of it; the control is an independent draw
of the same distribution against the same copy. Prints, for each, the wall time of every stage of `discover_anchors`
(similarity descriptors, Gromov-Wasserstein on `--n-sample` points, each self-learning round on `--n-refine` points,
the final chunked match of everything), the pairs returned, their precision against the known permutation, the score,
the peak resident memory, and the process CPU time (wall time on a shared machine overstates the cost); then a RESULT
line.

Usage: python benchmarks/bench_discovery.py [--n 100000] [--d 300] [--noise 0.3] [--n-sample 1000] [--n-refine 20000]
                                            [--threads 2] [--no-control]
"""
import argparse, time
import torch

def spaces(n:int, d:int, noise:float, seed:int=0):
    "x, its rotated, rescaled, shifted, noisy, shuffled copy y, truth (x[i] <-> y[truth[i]]), and an unrelated draw"
    g = torch.Generator().manual_seed(seed)
    spec = torch.arange(1, d + 1) ** -0.5
    x = torch.randn(n, d, generator=g) * spec
    Q = torch.linalg.qr(torch.randn(d, d, generator=g)).Q
    perm = torch.randperm(n, generator=g)
    y = (3 * x @ Q + noise * spec.norm() / d ** 0.5 * torch.randn(n, d, generator=g) + 0.5)[perm]
    truth = torch.empty_like(perm); truth[perm] = torch.arange(n)
    return x, y, truth, torch.randn(n, d, generator=g) * spec

def _peak_rss()->int:
    "Peak resident memory of this process so far, in bytes"
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'): return int(line.split()[1]) * 1024
    return 0

def run(name:str, x, y, truth, args)->float:
    "Run discover_anchors, print its stages, return the wall time"
    from latent_comm.discovery import discover_anchors
    from latent_comm.anchors import pair_precision
    t0, c0 = time.perf_counter(), time.process_time()
    res = discover_anchors(x, y, n_sample=args.n_sample, n_refine=args.n_refine, truth=truth)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f'\n{name}: {len(x):,} x {x.shape[1]} against {len(y):,} x {y.shape[1]}')
    prev = 0.
    for h in res.history:
        extra = ', '.join(f'{k} {v:.4g}' if isinstance(v, float) else f'{k} {v}' for k, v in h.items() if k not in ('stage', 'seconds'))
        print(f"  {h['stage']:<12} {h['seconds'] - prev:8.1f} s   {extra}")
        prev = h['seconds']
    prec = pair_precision(res.pairs, truth) if len(res.pairs) else float('nan')
    print(f'  total {wall:.1f} s wall, {cpu:.0f} s CPU (/{torch.get_num_threads()} threads = {cpu / torch.get_num_threads():.0f} s on an idle machine); {len(res.pairs):,} pairs at confidence >= 0.5 (precision {prec:.4f}), score {res.score:.3f}; '
          f'peak RSS {_peak_rss() / 2**30:.2f} GiB')
    return wall, cpu, res, prec

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--n', type=int, default=100_000); p.add_argument('--d', type=int, default=300)
    p.add_argument('--noise', type=float, default=0.3)
    p.add_argument('--n-sample', type=int, default=1000); p.add_argument('--n-refine', type=int, default=20000)
    p.add_argument('--threads', type=int, default=2); p.add_argument('--no-control', action='store_true')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x, y, truth, other = spaces(args.n, args.d, args.noise)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads; noise {args.noise}, transport sample {args.n_sample}, '
          f'self-learning pool {args.n_refine}')
    wall, cpu, res, prec = run('related (rotated noisy shuffled copy)', x, y, truth, args)
    if not args.no_control:
        _, _, bad, _ = run('control (unrelated draw, same spectrum)', other, y, torch.full_like(truth, -1), args)
        print(f'\ncontrol: score {bad.score:.3f} and {len(bad.pairs)} pairs, against {res.score:.3f} and {len(res.pairs):,} for the copy')
    print(f'RESULT {args.n // 1000}k matched in {wall:.0f} s (target: minutes on 2 cores; {cpu:.0f} CPU-seconds, '
          f'{cpu / torch.get_num_threads():.0f} s on {torch.get_num_threads()} idle cores): {len(res.pairs):,} pairs, precision {prec:.4f}, score {res.score:.3f}')

if __name__ == '__main__': main()
