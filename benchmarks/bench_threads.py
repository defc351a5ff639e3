"""Benchmark: two notebooks at once (what `nbdev_test --n_workers 2` does) with torch's default thread count in each,
against half of the cores each (what tools/test.sh sets through OMP_NUM_THREADS).

The workload is what the experiment notebooks repeat: cosine relative projections of 2,000 x 300 samples onto 300
anchors, top-10 neighbour searches, and Adam steps of a linear head on 250-sample batches (E7's training loop).

Prints the workload time (the slowest process, imports excluded) of one process alone and of two concurrent processes
for each thread count, and a last line `RESULT oversubscribed/split=<ratio>`: how much slower two processes run when
each takes every core. Target: the split setting is not slower (ratio >= 1).

Usage: python benchmarks/bench_threads.py [--reps 30]
"""
import argparse, os, subprocess, sys, time

WORK = r'''
import sys, time, torch
from latent_comm.relative import relative_projection
torch.manual_seed(0)
x, a = torch.randn(2000, 300), torch.randn(300, 300)
head = torch.nn.Linear(300, 10); opt = torch.optim.Adam(head.parameters(), 1e-2)
t = time.perf_counter()
for _ in range(int(sys.argv[1])):
    r = relative_projection(x, a)
    (r @ r.T).topk(10, dim=1)
    for b in range(0, 2000, 250):
        loss = torch.nn.functional.cross_entropy(head(r[b:b+250]), torch.randint(0, 10, (250,)))
        opt.zero_grad(); loss.backward(); opt.step()
print(time.perf_counter() - t)
'''

def run(threads:int, procs:int, reps:int)->float:
    "Workload seconds of the slowest of `procs` concurrent workers (imports excluded), each with `threads` threads"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    ps = [subprocess.Popen([sys.executable, '-c', WORK, str(reps)], env=env, stdout=subprocess.PIPE, text=True)
          for _ in range(procs)]
    out = [p.communicate()[0] for p in ps]
    for p in ps:
        if p.returncode: raise RuntimeError(f'worker failed with code {p.returncode}')
    return max(float(o) for o in out)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--reps', type=int, default=30)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    full, half = cores, max(1, cores // 2)
    print(f'{cores} cores; threads per process: default {full}, split {half}')
    res = {}
    for threads in (full, half):
        for procs in (1, 2):
            res[threads, procs] = run(threads, procs, args.reps)
            print(f'{procs} process(es) x {threads} thread(s): {res[threads, procs]:.1f} s')
    print(f'RESULT oversubscribed/split={res[full, 2] / res[half, 2]:.2f}')
