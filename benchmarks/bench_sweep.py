"""Benchmark: a model-pair sweep run serially and on a local Ray, in the same run.

The sweep: 16 small Fashion-MNIST classifiers (a zoo trained once and cached); the mutual k-NN alignment (k=10) of
every unordered pair of their latent spaces (64-d, on `--n` test images), and the test accuracy of every
encoder/decoder pair stitched through a Procrustes bridge fitted on 300 anchors. Each pair is one unit of work.

Reported: the serial wall time with one torch thread (the work of one core) and with torch's default threads (what a
user gets without Ray); Ray's start-up (`ray.init`, then the workers' first task, which imports torch and the
library); the same sweep on Ray (workers warm); the ratio serial (one thread) / Ray (target >= 1.6 on 2 cores);
Ray's per-task overhead from a sweep of no-op tasks, and that overhead over the sweep's units as a share of the work
(target < 10%); the whole measured loss (cores x Ray time - work) as a share of the work; and the time projected for
1,000 models on K nodes from the measured per-pair costs. The machine's load average is printed: on a shared machine
every figure is slowed by the other jobs.

Usage: python benchmarks/bench_sweep.py [--models 16] [--n 5000] [--cpus 2] [--noop 400]
"""
import argparse, os, time
import torch
from latent_comm.core import SerialRunner, cache_dir
from latent_comm.data import get_dataset
from latent_comm.distributed import RayRunner
from latent_comm.embeddings import pixel_tensors
from latent_comm.metrics import similarity_table
from latent_comm.models import evaluate, train_zoo
from latent_comm.stitching import TranslationBridge, stitching_matrix

def _noop(shared, unit): return unit

def zoo(n_models:int):
    "16 (or --models) MLP classifiers of Fashion-MNIST, trained briefly once and cached; the test images and labels"
    ds = get_dataset('fashion_mnist')
    X, Y = pixel_tensors(ds['train']); Xt, Yt = pixel_tensors(ds['test'])
    cfg = dict(arch='classifier', in_shape=(1, 28, 28), n_classes=10, encoder='mlp', latent=64)
    models = train_zoo({'mlp': cfg}, range(n_models), (X[:20000], Y[:20000]), cache_dir=cache_dir('zoo', 'bench_sweep'),
                       epochs=1, batch_size=256, lr=2e-3, progress=False)
    return {f'mlp{s}': m for (_, s), m in models.items()}, X[20000:20300], Xt, Yt

def sweep(models:dict, spaces:dict, anchors, test, runner)->tuple:
    "The sweep: (similarity table, stitching table, seconds of each part)"
    t0 = time.perf_counter()
    tab = similarity_table(spaces, ['mutual_knn'], runner=runner)
    t1 = time.perf_counter()
    acc = lambda m: evaluate(m, test)['acc']
    st = stitching_matrix(models, models, TranslationBridge(anchors), acc, names=('acc',), runner=runner).table
    return tab, st, t1 - t0, time.perf_counter() - t1

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--models', type=int, default=16); p.add_argument('--n', type=int, default=5000)
    p.add_argument('--cpus', type=int, default=2); p.add_argument('--noop', type=int, default=400)
    a = p.parse_args()
    load0 = os.getloadavg()
    models, anchors, Xt, Yt = zoo(a.models)
    test = (Xt[:a.n], Yt[:a.n])
    with torch.no_grad(): spaces = {k: m.embed(test[0]) for k, m in models.items()}
    m_units, s_units = a.models * (a.models + 1) // 2, a.models ** 2
    print(f"{a.models} models; {m_units} metric units (mutual k-NN, {a.n} samples x 64-d) + {s_units} stitching units "
          f"(accuracy on {a.n} test images); torch {torch.__version__}; {os.cpu_count()} CPUs here; "
          f"load average at start {load0[0]:.1f}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    tab1, st1, tm1, ts1 = sweep(models, spaces, anchors, test, SerialRunner(progress=False))
    torch.set_num_threads(threads)
    work = tm1 + ts1
    print(f"serial, 1 torch thread   : {work:7.2f} s  (metric {tm1:.2f} s = {1e3 * tm1 / m_units:.1f} ms/unit, "
          f"stitching {ts1:.2f} s = {1e3 * ts1 / s_units:.1f} ms/unit)")

    runner = RayRunner(cache=False, progress=False, init_kwargs=dict(num_cpus=a.cpus, object_store_memory=500 * 2**20))
    t0 = time.perf_counter(); runner.start(); t_init = time.perf_counter() - t0
    t0 = time.perf_counter(); runner.map(_noop, list(range(a.cpus))); t_warm = time.perf_counter() - t0
    print(f"Ray start-up             : {t_init + t_warm:7.2f} s  (ray.init {t_init:.2f} s, first tasks {t_warm:.2f} s)")
    t0 = time.perf_counter()
    sweep(models, spaces, anchors, test, runner)  # every worker fetches the sweep's inputs and imports what it needs
    print(f"Ray, first sweep         : {time.perf_counter() - t0:7.2f} s  (workers fetch the inputs, import the library)")
    tabr, str_, tmr, tsr = sweep(models, spaces, anchors, test, runner)
    t_ray = tmr + tsr
    same = tabr.equals(tab1) and str_.equals(st1)
    print(f"Ray, {a.cpus} CPUs (warm)      : {t_ray:7.2f} s  (metric {tmr:.2f} s, stitching {tsr:.2f} s); "
          f"results identical to serial: {same}")
    t0 = time.perf_counter(); runner.map(_noop, list(range(a.noop))); t_noop = time.perf_counter() - t0
    per_task = t_noop / a.noop
    units = m_units + s_units
    ratio = work / t_ray
    print(f"Ray per-task overhead    : {1e3 * per_task:.2f} ms wall per no-op task ({a.noop} tasks in {t_noop:.2f} s), "
          f"{1e3 * per_task * a.cpus:.2f} ms of the {a.cpus} CPUs")
    over = units * per_task * a.cpus / work
    loss = (a.cpus * t_ray - work) / work
    runner.close()
    _, _, tmd, tsd = sweep(models, spaces, anchors, test, SerialRunner(progress=False))  # torch's default threads
    print(f"serial, {threads} torch threads  : {tmd + tsd:7.2f} s")
    print(f"RESULT: speed-up serial (1 thread) / Ray = {ratio:.2f} (target >= 1.6: {'met' if ratio >= 1.6 else 'NOT met'}); "
          f"serial ({threads} threads) / Ray = {(tmd + tsd) / t_ray:.2f}")
    print(f"RESULT: Ray's per-task overhead x {units} units = {100 * over:.1f}% of the work "
          f"(target < 10%: {'met' if over < 0.10 else 'NOT met'}); all losses measured ({a.cpus} x Ray time - work): "
          f"{100 * loss:.1f}% of the work")
    print("Projection for 1,000 models (same samples and dimensions), from the per-unit costs measured above:")
    N = 1000
    mu, su = N * (N + 1) // 2, N * N
    core_s = mu * tm1 / m_units + su * ts1 / s_units + (mu + su) * per_task * a.cpus
    driver_s = (mu + su) * per_task  # if the no-op rate measured here is what one driver can submit and collect
    for k in (1, 10, 100, 1000):
        t = max(core_s / (k * a.cpus), driver_s)
        print(f"  {k:5d} nodes x {a.cpus} CPUs: {t / 3600:8.2f} h  ({mu:,} metric + {su:,} stitching units; "
              f"{core_s / 3600:.1f} core-hours; one driver's floor {driver_s / 3600:.2f} h)")
    print(f"load average at end {os.getloadavg()[0]:.1f}")

if __name__ == '__main__': main()
