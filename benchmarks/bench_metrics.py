"""Benchmark latent_comm.metrics at scale, against baselines measured in the same run.

    python benchmarks/bench_metrics.py            # full sizes from the issue (about 15-20 min on 2 CPU cores)
    python benchmarks/bench_metrics.py --quick    # small sizes, a smoke test
    python benchmarks/bench_metrics.py --only l2  # one group of cases: cka, jaccard, l2, or knn (jaccard and l2)

Cases (each in a fresh subprocess, so peak memory is that case's alone):
- linear CKA at n = 1,000,000, d = 256 (feature space, chunked);
- linear CKA against the naive n x n Gram formula at the largest n tried for it (--n-gram);
- within-space Jaccard of k-NN at n = 100,000, d = 300, k = 10 with `knn` (chunked matmul + topk), against the same
  Jaccard computed from faiss-cpu `IndexFlatIP` searches;
- one Euclidean neighbour search (--l2-queries queries against n keys): `knn(sim='euclidean')` (centred on the keys'
  mean, exact distances for the neighbours kept) against faiss `IndexFlatL2`.

faiss is a benchmark-only dependency (`pip install faiss-cpu`); without it the faiss cases are skipped with a message.
Peak memory is VmHWM from /proc/self/status: "peak" is the whole process (inputs included), "extra" is the rise over
the resident size once the inputs exist (VmHWM is reset through /proc/self/clear_refs where the kernel allows it).
The last line, `RESULT ...`, sums up the ratios of the groups that ran, for scripts to read.
"""
import argparse, json, math, os, subprocess, sys, time

def _status(key):
    "A field of /proc/self/status in MiB (None off Linux)"
    try:
        for line in open('/proc/self/status'):
            if line.startswith(key + ':'): return int(line.split()[1]) / 1024
    except OSError: return None

def _reset_peak()->bool:
    "Reset VmHWM to the current resident size; False where the kernel does not allow it"
    try:
        with open('/proc/self/clear_refs', 'w') as f: f.write('5')
        return True
    except OSError: return False

def _data(n, d, seed, related=True):
    "Two paired spaces: y is a random linear map of x plus noise (float32)"
    import torch
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    if not related: return x, torch.randn(n, d, generator=g)
    w = torch.randn(d, d, generator=g) / math.sqrt(d)
    y = x @ w
    y += 0.5 * torch.randn(n, d, generator=g)
    return x, y

def _faiss_knn(x, k, sim, exclude_self, queries=None):
    "Exact k-NN with a faiss flat index: inner product on normalised rows for sim='cosine', squared L2 for 'euclidean'"
    import faiss, numpy as np, torch
    faiss.omp_set_num_threads(torch.get_num_threads())
    keys = np.ascontiguousarray(x.numpy())
    q = keys if queries is None else np.ascontiguousarray(queries.numpy())
    if sim == 'cosine':
        keys = keys / np.linalg.norm(keys, axis=1, keepdims=True)
        q = keys if queries is None else q / np.linalg.norm(q, axis=1, keepdims=True)
    index = (faiss.IndexFlatIP if sim == 'cosine' else faiss.IndexFlatL2)(keys.shape[1])
    index.add(keys)
    D, I = index.search(q, k + int(exclude_self))
    if exclude_self:
        keep = np.argsort(I == np.arange(len(I))[:, None], axis=1, kind='stable')[:, :k]
        D, I = np.take_along_axis(D, keep, 1), np.take_along_axis(I, keep, 1)
    return torch.from_numpy(D), torch.from_numpy(I)

def _naive_gram_cka(x, y):
    "Linear CKA from the n x n Gram matrices, centred by row and column means (the textbook formula, float32 in and out)"
    K, L = x @ x.T, y @ y.T
    for G in (K, L):
        r = G.mean(0, keepdim=True)
        G.sub_(r).sub_(r.T).add_(r.mean())
    return ((K * L).sum() / ((K * K).sum() * (L * L).sum()).sqrt()).item()

def run_case(case, a):
    "Build the inputs, reset the peak, time the call; returns a dict of figures"
    import torch
    from latent_comm.metrics import cka, jaccard_knn, knn, _match
    if case == 'cka_1m': x, y = _data(a.n_cka, a.d_cka, 0)
    elif case in ('cka_gram_ours', 'cka_gram_naive'): x, y = _data(a.n_gram, a.d_cka, 1)
    elif case in ('jaccard_ours', 'jaccard_faiss'): x, y = _data(a.n_knn, a.d_knn, 2)
    else: x, _ = _data(a.n_knn, a.d_knn, 3, related=False)
    base = _status('VmRSS'); resettable = _reset_peak()
    t0 = time.perf_counter()
    if case in ('cka_1m', 'cka_gram_ours'): value = cka(x, y)
    elif case == 'cka_gram_naive': value = _naive_gram_cka(x, y)
    elif case == 'jaccard_ours': value = jaccard_knn(x, y, k=a.k)
    elif case == 'jaccard_faiss':
        hit, _ = _match(_faiss_knn(x, a.k, 'cosine', True)[1], _faiss_knn(y, a.k, 'cosine', True)[1])
        c = hit.sum(1).double()
        value = (c / (2 * a.k - c)).mean().item()
    elif case == 'l2_ours': value = knn(x[:a.l2_queries], x, a.k, 'euclidean')[1][:, :3].tolist()[:2]
    elif case == 'l2_faiss': value = _faiss_knn(x, a.k, 'euclidean', False, queries=x[:a.l2_queries])[1][:, :3].tolist()[:2]
    seconds = time.perf_counter() - t0
    peak = _status('VmHWM')
    return dict(case=case, seconds=seconds, value=value, peak_mib=peak, inputs_mib=base,
                extra_mib=(peak - base) if resettable and peak is not None else None, threads=torch.get_num_threads())

def _spawn(case, argv):
    "Run one case in a fresh interpreter and parse its JSON line"
    out = subprocess.run([sys.executable, __file__, '--case', case] + argv, capture_output=True, text=True)
    if out.returncode: raise SystemExit(f"case {case} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])

def _mib(v): return 'n/a' if v is None else f"{v:,.0f} MiB"

def _line(r, label):
    print(f"  {label:<44s} {r['seconds']:9.2f} s   peak {_mib(r['peak_mib'])} (inputs {_mib(r['inputs_mib'])}, "
          f"extra {_mib(r['extra_mib'])})", flush=True)

def main(a, argv):
    import importlib.util, torch
    have_faiss = importlib.util.find_spec('faiss') is not None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; faiss: "
          f"{'installed' if have_faiss else 'not installed'}", flush=True)
    res = {}
    if a.only in (None, 'cka'): res |= _cka_cases(a, argv)
    if a.only in (None, 'knn', 'jaccard'): res |= _jaccard_cases(a, argv, have_faiss)
    if a.only in (None, 'knn', 'l2'): res |= _l2_cases(a, argv, have_faiss)
    print('\nRESULT bench_metrics ' + ' '.join(f'{k}={v}' for k, v in res.items()), flush=True)

def _cka_cases(a, argv):
    print(f"\n[linear CKA] n = {a.n_cka:,}, d = {a.d_cka}", flush=True)
    r = _spawn('cka_1m', argv); _line(r, 'cka(x, y) feature space'); print(f"  value {r['value']:.6f}")
    print(f"\n[linear CKA vs naive Gram formula] n = {a.n_gram:,}, d = {a.d_cka}", flush=True)
    ours, naive = _spawn('cka_gram_ours', argv), _spawn('cka_gram_naive', argv)
    _line(ours, 'cka(x, y) feature space'); _line(naive, 'naive n x n Gram formula')
    print(f"  values {ours['value']:.6f} vs {naive['value']:.6f}; speed-up {naive['seconds'] / ours['seconds']:.1f}x, "
          f"extra memory {_mib(ours['extra_mib'])} vs {_mib(naive['extra_mib'])}")
    return dict(cka_s=f"{r['seconds']:.2f}", cka_speedup_vs_gram=f"{naive['seconds'] / ours['seconds']:.1f}")

def _jaccard_cases(a, argv, have_faiss):
    print(f"\n[within-space Jaccard of k-NN] n = {a.n_knn:,}, d = {a.d_knn}, k = {a.k} (two exact searches, self excluded)", flush=True)
    ours = _spawn('jaccard_ours', argv); _line(ours, 'jaccard_knn (knn: chunked matmul + topk)')
    if have_faiss:
        fa = _spawn('jaccard_faiss', argv); _line(fa, 'same Jaccard from faiss IndexFlatIP')
        print(f"  values {ours['value']:.6f} vs {fa['value']:.6f}; time ratio ours / faiss = {ours['seconds'] / fa['seconds']:.2f}")
        return dict(jaccard_s=f"{ours['seconds']:.2f}", jaccard_time_ratio_vs_faiss=f"{ours['seconds'] / fa['seconds']:.2f}")
    print("  faiss comparison skipped: faiss is not installed (pip install faiss-cpu)")
    return dict(jaccard_s=f"{ours['seconds']:.2f}")

def _l2_cases(a, argv, have_faiss):
    print(f"\n[Euclidean neighbour search] {a.l2_queries:,} queries against {a.n_knn:,} keys, d = {a.d_knn}, k = {a.k}", flush=True)
    ours = _spawn('l2_ours', argv); _line(ours, "knn(sim='euclidean')")
    if have_faiss:
        fa = _spawn('l2_faiss', argv); _line(fa, 'faiss IndexFlatL2')
        print(f"  first neighbours agree: {ours['value'] == fa['value']}; time ratio ours / faiss = "
              f"{ours['seconds'] / fa['seconds']:.2f}")
        return dict(l2_s=f"{ours['seconds']:.2f}", l2_time_ratio_vs_faiss=f"{ours['seconds'] / fa['seconds']:.2f}",
                    l2_extra_mib='n/a' if ours['extra_mib'] is None else f"{ours['extra_mib']:.0f}",
                    l2_agree=ours['value'] == fa['value'])
    print("  faiss comparison skipped: faiss is not installed (pip install faiss-cpu)")
    return dict(l2_s=f"{ours['seconds']:.2f}")

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--n-cka', type=int, default=1_000_000); p.add_argument('--d-cka', type=int, default=256)
    p.add_argument('--n-gram', type=int, default=20_000, help='n for the naive n x n Gram baseline (largest tried)')
    p.add_argument('--n-knn', type=int, default=100_000); p.add_argument('--d-knn', type=int, default=300)
    p.add_argument('--k', type=int, default=10); p.add_argument('--l2-queries', type=int, default=20_000)
    p.add_argument('--quick', action='store_true', help='small sizes: a smoke test of the script')
    p.add_argument('--only', choices=['cka', 'jaccard', 'l2', 'knn'], help="run one group of cases ('knn': jaccard and l2)")
    p.add_argument('--case', help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.quick: a.n_cka, a.n_gram, a.n_knn, a.l2_queries = 20_000, 2_000, 5_000, 1_000
    argv = [f"--{k.replace('_', '-')}={v}" for k, v in vars(a).items() if k not in ('case', 'quick', 'only')]
    if a.case: print(json.dumps(run_case(a.case, a)))
    else: main(a, argv)
