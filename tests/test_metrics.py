"Metrics against independent reference computations on small inputs, known values, invariances and bad input."
import math
import numpy as np
import pytest, torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from scipy.linalg import orthogonal_procrustes, qr
from scipy.spatial import procrustes as scipy_procrustes
from scipy.stats import rankdata
from sklearn.cross_decomposition import CCA
from latent_comm.metrics import (METRICS, knn, jaccard_knn, cross_jaccard_knn, mutual_knn, cknna, mrr, top_k_accuracy,
                                 mean_cosine, cka, canonical_correlations, svcca, pwcca, procrustes_distance, permuted,
                                 similarity_table, plot_similarity, _median_distance)

def _gen(seed): return torch.Generator().manual_seed(seed)

def _orth(d, seed):
    return torch.linalg.qr(torch.randn(d, d, generator=_gen(seed), dtype=torch.float64))[0]

def _pair(n=120, dx=6, dy=9, seed=0, noise=0.5):
    "Related paired spaces in float64: y is a linear map of x plus noise"
    g = _gen(seed)
    x = torch.randn(n, dx, generator=g, dtype=torch.float64)
    y = x @ torch.randn(dx, dy, generator=g, dtype=torch.float64) + noise * torch.randn(n, dy, generator=g, dtype=torch.float64)
    return x, y

# ---------- naive O(n^2) references (numpy) ----------
def _scores(q, k, sim):
    "The similarity `sim` of every query to every key, as `latent_comm.similarity` defines it (numpy, float64)"
    q, k = q.double().numpy(), k.double().numpy()
    if sim == 'cosine':
        q = q / np.linalg.norm(q, axis=1, keepdims=True); k = k / np.linalg.norm(k, axis=1, keepdims=True)
    if sim == 'euclidean': return -np.sqrt(((q[:, None, :] - k[None, :, :]) ** 2).sum(-1))
    if sim == 'l1': return -np.abs(q[:, None, :] - k[None, :, :]).sum(-1)
    return q @ k.T / (np.sqrt(q.shape[1]) if sim == 'dot' else 1)

def _naive_knn_sets(q, k, kk, sim='cosine', exclude_self=False):
    s = _scores(q, k, sim)
    if exclude_self: np.fill_diagonal(s, -np.inf)
    return [set(np.argsort(-row, kind='stable')[:kk].tolist()) for row in s]

def _naive_jaccard(a, b): return np.mean([len(p & q) / len(p | q) for p, q in zip(a, b)])

def _hsic_u(K, L):
    "Unbiased HSIC (Song et al. 2012) with full n x n matrices"
    n = len(K); K, L = K.copy(), L.copy(); np.fill_diagonal(K, 0); np.fill_diagonal(L, 0)
    one = np.ones(n)
    return (np.trace(K @ L) + one @ K @ one * (one @ L @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * one @ K @ L @ one) / (n * (n - 3))

def _cka_ref(K, L, debiased=False):
    "CKA from full kernels: centring matrix H for the biased form, unbiased HSIC for the debiased one"
    if debiased: return _hsic_u(K, L) / np.sqrt(_hsic_u(K, K) * _hsic_u(L, L))
    n = len(K); H = np.eye(n) - 1 / n
    Kc, Lc = H @ K @ H, H @ L @ H
    return (Kc * Lc).sum() / np.sqrt((Kc * Kc).sum() * (Lc * Lc).sum())

def _rbf_ref(x):
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    sigma = np.median(np.sqrt(d2[np.triu_indices(len(x), 1)]))
    return np.exp(-d2 / (2 * sigma ** 2))

def _qr_cca(x, y):
    "Canonical correlations by QR of the centred data (Bjorck and Golub)"
    qx = qr(x - x.mean(0), mode='economic')[0]; qy = qr(y - y.mean(0), mode='economic')[0]
    return np.linalg.svd(qx.T @ qy, compute_uv=False)

# ---------- knn ----------
@pytest.mark.parametrize('sim', ['cosine', 'dot', 'euclidean', 'l1'])
@pytest.mark.parametrize('chunk', [None, 1, 17])
def test_knn_matches_naive(sim, chunk, device):
    x, _ = _pair(80, 5)
    q = x[:30] + 0.1
    vals, idx = knn(q.to(device), x.to(device), 4, sim, chunk_size=chunk)
    s = _scores(q, x, sim)
    order = np.argsort(-s, axis=1, kind='stable')[:, :4]
    np.testing.assert_array_equal(idx.cpu().numpy(), order)
    np.testing.assert_allclose(vals.cpu().numpy(), np.take_along_axis(s, order, 1), rtol=1e-9, atol=1e-9)

def test_knn_exclude_self_and_chunks_agree(device):
    x = torch.randn(200, 7, generator=_gen(1)).to(device)
    v1, i1 = knn(x, x, 5, 'euclidean', exclude_self=True)
    v2, i2 = knn(x, x, 5, 'euclidean', exclude_self=True, chunk_size=13)
    assert torch.equal(i1, i2) and torch.allclose(v1, v2)
    assert not (i1 == torch.arange(200, device=device)[:, None]).any()
    assert i1.shape == (200, 5) and i1.dtype == torch.long

def test_knn_half_precision_computes_in_float32():
    x = torch.randn(50, 4, generator=_gen(2)).half()
    v, i = knn(x, x, 3)
    assert v.dtype == torch.float32 and torch.equal(i[:, 0], torch.arange(50))

def test_knn_errors():
    x = torch.randn(10, 3)
    with pytest.raises(ValueError, match='1 <= k <= 10'): knn(x, x, 11)
    with pytest.raises(ValueError, match='1 <= k <= 9'): knn(x, x, 10, exclude_self=True)
    for old in ('cos', 'ip', 'l2'):
        with pytest.raises(ValueError, match=f"`sim`='{old}' is not a known similarity"): knn(x, x, 2, sim=old)
    with pytest.raises(ValueError, match='`queries` contains NaN'): knn(x.masked_fill(x > 0, float('nan')), x, 2)
    with pytest.raises(ValueError, match='`chunk_size`'): knn(x, x, 2, chunk_size=0)
    with pytest.raises(TypeError, match='`keys` must be a torch.Tensor'): knn(x, x.numpy(), 2)

# ---------- neighbourhood metrics ----------
@pytest.mark.parametrize('sim', ['cosine', 'euclidean', 'l1'])
def test_jaccard_and_mutual_knn_match_naive(sim):
    x, y = _pair(150, 5, 8, seed=3)
    for k in (1, 5, 12):
        a = _naive_knn_sets(x, x, k, sim, exclude_self=True)
        b = _naive_knn_sets(y, y, k, sim, exclude_self=True)
        assert jaccard_knn(x, y, k, sim) == pytest.approx(_naive_jaccard(a, b), abs=1e-12)
        assert mutual_knn(x, y, k, sim) == pytest.approx(np.mean([len(p & q) / k for p, q in zip(a, b)]), abs=1e-12)

def test_cross_jaccard_matches_paper_protocol():
    x, y = _pair(150, 6, 6, seed=4, noise=0.3)
    a = _naive_knn_sets(x, y, 5)   # neighbours of x_i searched among the y's, self not excluded
    b = _naive_knn_sets(y, y, 5)
    assert cross_jaccard_knn(x, y, 5) == pytest.approx(_naive_jaccard(a, b), abs=1e-12)
    assert cross_jaccard_knn(y, y) == 1.

def _dense_cknna(x, y, k):
    "Huh et al.'s platonic-rep formulation with n x n masks"
    xn, yn = F.normalize(x, dim=1).numpy(), F.normalize(y, dim=1).numpy()
    K, L = xn @ xn.T, yn @ yn.T
    def mask(G):
        G = G.copy(); np.fill_diagonal(G, -np.inf)
        m = np.zeros_like(G); np.put_along_axis(m, np.argsort(-G, axis=1)[:, :k], 1, 1); return m
    mk, ml = mask(K), mask(L)
    return _hsic_u(mk * ml * K, mk * ml * L) / np.sqrt(_hsic_u(mk * K, mk * K) * _hsic_u(ml * L, ml * L))

@pytest.mark.parametrize('k', [2, 5, 20])
def test_cknna_matches_dense(k):
    x, y = _pair(130, 6, 9, seed=5)
    assert cknna(x, y, k) == pytest.approx(_dense_cknna(x, y, k), abs=1e-10)
    assert cknna(x, x, k) == pytest.approx(1.)

def test_cknna_dot_kernel_matches_dense():
    "sim='dot': the inner-product kernel (its 1/sqrt(d) scale cancels in the ratio) and its neighbourhoods"
    x, y = _pair(130, 6, 9, seed=22)
    K, L = x.numpy() @ x.numpy().T, y.numpy() @ y.numpy().T
    def mask(G):
        G = G.copy(); np.fill_diagonal(G, -np.inf)
        m = np.zeros_like(G); np.put_along_axis(m, np.argsort(-G, axis=1)[:, :7], 1, 1); return m
    mk, ml = mask(K), mask(L)
    ref = _hsic_u(mk * ml * K, mk * ml * L) / np.sqrt(_hsic_u(mk * K, mk * K) * _hsic_u(ml * L, ml * L))
    assert cknna(x, y, 7, sim='dot') == pytest.approx(ref, abs=1e-10)

def test_cknna_is_zero_when_a_self_term_is_not_positive():
    "As cka: a self-term HSIC_u <= 0 makes the ratio undefined; before, two negative self-terms gave cknna(x, x) = -1"
    line = torch.tensor([[-4.], [-3.], [-2.], [-1.], [2.]], dtype=torch.float64)
    assert cknna(line, line, 1) == 0. and cknna(line, 2 * line, 1) == 0.
    x, _ = _pair(5, 2, seed=0)
    assert cknna(line, x, 1) == 0. and cknna(x, line, 1) == 0.

# ---------- retrieval ----------
def test_mrr_and_top_k_match_naive_ranks():
    x, y = _pair(100, 6, 6, seed=6, noise=1.0)
    s = _scores(x, y, 'cosine')
    ranks = np.array([rankdata(-row, method='average')[i] for i, row in enumerate(s)])
    assert mrr(x, y) == pytest.approx(np.mean(1 / ranks))
    assert mrr(x, y, k=3) == pytest.approx(np.mean(np.where(ranks <= 3, 1 / ranks, 0)))
    for k in (1, 5):
        assert top_k_accuracy(x, y, k) == pytest.approx(np.mean(ranks <= k))
    assert mrr(x, y, chunk_size=7) == mrr(x, y)
    cos = (F.normalize(x, dim=1) * F.normalize(y, dim=1)).sum(1).mean().item()
    assert mean_cosine(x, y, chunk_size=9) == pytest.approx(cos)

@pytest.mark.parametrize('sim', ['cosine', 'dot', 'euclidean', 'l1', 'angular'])
def test_mrr_and_top_k_rank_by_the_similarity(sim):
    x, y = _pair(100, 6, 6, seed=6, noise=1.0)
    s = _scores(x, y, sim) if sim != 'angular' else 1 - np.arccos(np.clip(_scores(x, y, 'cosine'), -1, 1)) / np.pi
    ranks = np.array([rankdata(-row, method='average')[i] for i, row in enumerate(s)])
    assert mrr(x, y, sim=sim) == pytest.approx(np.mean(1 / ranks), abs=1e-12)
    assert mrr(x, y, k=3, sim=sim, chunk_size=7) == pytest.approx(np.mean(np.where(ranks <= 3, 1 / ranks, 0)), abs=1e-12)
    assert top_k_accuracy(x, y, 5, sim=sim, chunk_size=13) == pytest.approx(np.mean(ranks <= 5), abs=1e-12)

def test_retrieval_ties_count_half_under_every_similarity():
    y = torch.tensor([[1., 0.], [1., 0.], [0., 1.], [-1., 0.]], dtype=torch.float64)   # rows 0 and 1 coincide
    for sim in ('cosine', 'dot', 'euclidean', 'l1'):
        assert mrr(y, y, sim=sim) == pytest.approx((1 / 1.5 + 1 / 1.5 + 1 + 1) / 4), sim

def test_retrieval_needs_equal_dimensions():
    x, y = _pair(20, 3, 4)
    for f in (mrr, top_k_accuracy, mean_cosine, cross_jaccard_knn):
        with pytest.raises(ValueError, match='`x` has dimension 3 but `y` has dimension 4'): f(x, y)

# ---------- CKA ----------
@pytest.mark.parametrize('debiased', [False, True])
def test_linear_cka_equals_gram_formula(debiased):
    x, y = _pair(90, 7, 5, seed=7)
    xn, yn = x.numpy(), y.numpy()
    ref = _cka_ref(xn @ xn.T, yn @ yn.T, debiased)
    assert cka(x, y, debiased=debiased) == pytest.approx(ref, abs=1e-10)
    assert cka(x, y, debiased=debiased, chunk_size=11) == pytest.approx(ref, abs=1e-10)
    assert cka(x.float(), y.float(), debiased=debiased) == pytest.approx(ref, abs=1e-5)

@pytest.mark.parametrize('debiased', [False, True])
def test_rbf_cka_equals_naive_centred_kernels(debiased):
    x, y = _pair(90, 7, 5, seed=8)
    ref = _cka_ref(_rbf_ref(x.numpy()), _rbf_ref(y.numpy()), debiased)
    assert cka(x, y, kernel='rbf', debiased=debiased) == pytest.approx(ref, abs=1e-10)
    assert cka(x, y, kernel='rbf', debiased=debiased, chunk_size=8) == pytest.approx(ref, abs=1e-10)

def test_rbf_bandwidth_scale_and_subsample():
    x, y = _pair(90, 7, 5, seed=9)
    d2 = lambda a: ((a[:, None] - a[None]) ** 2).sum(-1)
    K = lambda a: np.exp(-d2(a) / (2 * (2 * np.median(np.sqrt(d2(a)[np.triu_indices(len(a), 1)]))) ** 2))
    assert cka(x, y, kernel='rbf', bandwidth=2.) == pytest.approx(_cka_ref(K(x.numpy()), K(y.numpy())), abs=1e-10)
    assert _median_distance(x, max_rows=60) == pytest.approx(_median_distance(x), rel=0.1)

@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), scale=st.floats(0.01, 100), shift=st.floats(-10, 10))
def test_cka_and_procrustes_invariant_to_orthogonal_maps_and_scaling(seed, scale, shift):
    x, y = _pair(40, 5, 6, seed=seed)
    z = scale * x @ _orth(5, seed + 1) + shift
    for kw in (dict(), dict(debiased=True), dict(kernel='rbf'), dict(kernel='rbf', debiased=True)):
        assert cka(z, y, **kw) == pytest.approx(cka(x, y, **kw), abs=1e-8)
        assert cka(x, z, **kw) == pytest.approx(1., abs=1e-8)
    assert procrustes_distance(z, y) == pytest.approx(procrustes_distance(x, y), abs=1e-7)
    assert procrustes_distance(x, z) == pytest.approx(0., abs=1e-6)
    assert jaccard_knn(x, scale * x @ _orth(5, seed + 1), 5) == 1.   # cosine neighbourhoods: no shift

# ---------- CCA family ----------
def test_canonical_correlations_match_sklearn_and_scipy():
    x, y = _pair(200, 4, 5, seed=10, noise=1.0)
    rho = canonical_correlations(x, y).numpy()
    np.testing.assert_allclose(rho, _qr_cca(x.numpy(), y.numpy()), atol=1e-10)
    sx, sy = CCA(n_components=4, max_iter=5000, tol=1e-14).fit(x.numpy(), y.numpy()).transform(x.numpy(), y.numpy())
    np.testing.assert_allclose(rho, [np.corrcoef(sx[:, i], sy[:, i])[0, 1] for i in range(4)], atol=1e-5)

def test_svcca_matches_svd_then_cca():
    g = _gen(11)
    x = torch.randn(200, 8, generator=g, dtype=torch.float64) * torch.logspace(0, -2, 8, dtype=torch.float64)
    y = x @ torch.randn(8, 6, generator=g, dtype=torch.float64) + torch.randn(200, 6, generator=g, dtype=torch.float64)
    def reduce(a):
        a = a - a.mean(0); u, s, _ = np.linalg.svd(a, full_matrices=False)
        r = int(np.searchsorted(np.cumsum(s ** 2) / np.sum(s ** 2), 0.99) + 1)
        return u[:, :r] * s[:r]
    xr, yr = reduce(x.numpy()), reduce(y.numpy())
    assert xr.shape[1] < 8
    assert svcca(x, y) == pytest.approx(_qr_cca(xr, yr).mean(), abs=1e-10)

def test_pwcca_matches_projection_weights():
    x, y = _pair(200, 4, 6, seed=12, noise=1.0)
    xc, yc = x.numpy() - x.numpy().mean(0), y.numpy() - y.numpy().mean(0)
    qx, qy = qr(xc, mode='economic')[0], qr(yc, mode='economic')[0]
    u, rho, _ = np.linalg.svd(qx.T @ qy, full_matrices=False)
    h = qx @ u                               # canonical variates of x, the side with fewer neurons
    w = np.abs(h.T @ xc).sum(1); w = w / w.sum()
    assert pwcca(x, y) == pytest.approx((w * rho).sum(), abs=1e-10)
    assert pwcca(y, x) == pytest.approx((w * rho).sum(), abs=1e-10)   # the smaller side again

def test_cca_identity_and_rank_deficiency():
    x, _ = _pair(100, 6)
    for f in (svcca, pwcca): assert f(x, x) == pytest.approx(1.)
    low = x[:, :2] @ torch.randn(2, 6, generator=_gen(13), dtype=torch.float64)
    rho = canonical_correlations(low, x)
    assert rho.shape == (2,) and torch.allclose(rho, torch.ones(2, dtype=torch.float64))
    assert svcca(low, x) == pytest.approx(1.) and pwcca(low, x) == pytest.approx(1.)

# ---------- Procrustes ----------
def test_procrustes_matches_scipy():
    x, y = _pair(60, 5, 5, seed=14)
    disparity = scipy_procrustes(x.numpy(), y.numpy())[2]
    assert procrustes_distance(x, y) == pytest.approx(math.acos(math.sqrt(1 - disparity)), abs=1e-10)

def test_procrustes_different_dimensions_zero_pads():
    x, y = _pair(60, 3, 6, seed=15)
    xc, yc = x.numpy() - x.numpy().mean(0), y.numpy() - y.numpy().mean(0)
    xc, yc = xc / np.linalg.norm(xc), yc / np.linalg.norm(yc)
    xp = np.pad(xc, ((0, 0), (0, 3)))
    R, _ = orthogonal_procrustes(xp, yc)
    assert procrustes_distance(x, y) == pytest.approx(math.acos((xp @ R * yc).sum()), abs=1e-10)

# ---------- known values ----------
def test_identity_gives_one():
    x, _ = _pair(100, 6)
    for f in (jaccard_knn, mutual_knn, cknna, cross_jaccard_knn, mrr, top_k_accuracy, mean_cosine, cka, svcca, pwcca):
        assert f(x, x) == pytest.approx(1.), f.__name__
    for kw in (dict(debiased=True), dict(kernel='rbf'), dict(kernel='rbf', debiased=True)):
        assert cka(x, x, **kw) == pytest.approx(1.)
    assert procrustes_distance(x, x) == pytest.approx(0., abs=1e-7)

def test_unrelated_spaces_give_chance():
    g = _gen(16)
    n, k = 2000, 10
    x, y = torch.randn(n, 16, generator=g), torch.randn(n, 16, generator=g)
    assert mutual_knn(x, y, k) == pytest.approx(k / (n - 1), abs=0.005)
    assert jaccard_knn(x, y, k) < 0.01
    assert mrr(x, y) == pytest.approx(sum(1 / r for r in range(1, n + 1)) / n, abs=0.01)
    assert top_k_accuracy(x, y, 20) == pytest.approx(20 / n, abs=0.01)
    assert abs(mean_cosine(x, y)) < 0.02
    assert abs(cka(x, y, debiased=True)) < 0.01
    assert abs(cka(x, y, kernel='rbf', debiased=True)) < 0.01
    assert abs(cknna(x, y, k)) < 0.05
    assert procrustes_distance(x, y) > 1.3

def test_constant_and_rank_deficient_inputs_give_documented_values():
    x, _ = _pair(50, 4)
    c = torch.full((50, 3), 2., dtype=torch.float64)
    for kw in (dict(), dict(debiased=True), dict(kernel='rbf'), dict(kernel='rbf', debiased=True)):
        assert cka(c, x, **kw) == 0. and cka(x, c, **kw) == 0. and cka(c, c, **kw) == 0.
    assert svcca(c, x) == 0. and pwcca(x, c) == 0. and canonical_correlations(c, x).numel() == 0
    assert procrustes_distance(c, x) == math.pi / 2
    for f in (jaccard_knn, mutual_knn, cknna, mrr, mean_cosine, top_k_accuracy):
        assert math.isfinite(f(c, c[:, :3] * 0)), f.__name__
    assert mrr(c * 0, c * 0) == pytest.approx(1 / (1 + 49 / 2))
    half = torch.cat([x[:, :2], torch.zeros(50, 2, dtype=torch.float64)], 1)   # two constant features
    assert cka(half, x[:, :2]) == pytest.approx(1.)
    assert math.isfinite(cka(half, x, debiased=True)) and math.isfinite(pwcca(half, x))

# ---------- bad input ----------
@pytest.mark.parametrize('name', sorted(METRICS))
def test_every_metric_rejects_bad_input(name):
    f = METRICS[name]
    x, y = _pair(30, 4, 4)
    with pytest.raises(ValueError, match='`x` has 30 samples but `y` has 29'): f(x, y[:29])
    bad = y.clone(); bad[3, 2] = float('nan')
    with pytest.raises(ValueError, match='`y` contains NaN or Inf'): f(x, bad)
    bad[3, 2] = float('inf')
    with pytest.raises(ValueError, match='`x` contains NaN or Inf'): f(bad, y)
    with pytest.raises(ValueError, match='`x` must have 2 dimensions'): f(x[0], y)

@pytest.mark.parametrize('f', [jaccard_knn, mutual_knn, cknna, cross_jaccard_knn, top_k_accuracy, mrr])
def test_k_must_be_below_n(f):
    x, _ = _pair(30, 4)
    with pytest.raises(ValueError, match='`k` must be an integer with 1 <= k < n = 30'): f(x, x, k=30)
    with pytest.raises(ValueError, match='`k` must be an integer'): f(x, x, k=0)

def test_other_argument_errors():
    x, _ = _pair(30, 4)
    with pytest.raises(ValueError, match='`kernel`'): cka(x, x, kernel='poly')
    with pytest.raises(ValueError, match='`x` needs at least 4 samples'): cka(x[:3], x[:3], debiased=True)
    with pytest.raises(ValueError, match="`sim` must be 'cosine' or 'dot'"): cknna(x, x, sim='euclidean')
    with pytest.raises(ValueError, match='`keep`'): svcca(x, x, keep=1.5)

# ---------- devices and dtypes ----------
def test_metrics_follow_the_device(device):
    x, y = _pair(80, 5, 5, seed=17)
    for name in ('jaccard_knn', 'mutual_knn', 'cknna', 'mrr', 'mean_cosine', 'cka', 'cka_rbf', 'svcca', 'pwcca',
                 'procrustes_distance'):
        a, b = x.float(), y.float()
        assert METRICS[name](a.to(device), b.to(device)) == pytest.approx(METRICS[name](a, b), abs=1e-4), name

def test_mixed_and_half_precision_inputs():
    x, y = _pair(80, 5, 5, seed=18)
    assert cka(x.float(), y) == pytest.approx(cka(x, y), abs=1e-6)
    assert jaccard_knn(x.half(), y.half(), 5) == jaccard_knn(x.half().float(), y.half().float(), 5)
    assert knn(x.half(), x.half(), 3)[0].dtype == torch.float32

# ---------- registry, table, plot ----------
def test_registry_and_tags():
    assert {'jaccard_knn', 'cross_jaccard_knn', 'mutual_knn', 'cknna', 'mrr', 'top_k_accuracy', 'mean_cosine', 'cka',
            'cka_rbf', 'cka_debiased', 'svcca', 'pwcca', 'procrustes_distance'} <= set(METRICS)
    assert METRICS['mrr'].same_dim and not METRICS['cka'].same_dim
    assert METRICS['cka_rbf'].symmetric and not METRICS['pwcca'].symmetric
    x, y = _pair(60, 5, 5, seed=19)
    assert METRICS['cka_rbf'](x, y) == cka(x, y, kernel='rbf')

def test_similarity_table_is_tidy_and_complete():
    x, y = _pair(60, 5, 7, seed=20)
    spaces = {'a': x, 'b': y, 'c': x @ _orth(5, 3)}
    t = similarity_table(spaces, metrics=['cka', 'mrr', 'pwcca'])
    assert list(t.columns) == ['x', 'y', 'metric', 'value']
    assert len(t[t.metric == 'cka']) == 9 and len(t[t.metric == 'mrr']) == 5 and len(t[t.metric == 'pwcca']) == 9
    v = t.set_index(['metric', 'x', 'y'])['value']
    assert v['cka', 'a', 'b'] == v['cka', 'b', 'a'] == pytest.approx(cka(x, y))
    assert v['pwcca', 'a', 'b'] == pytest.approx(pwcca(x, y)) and v['pwcca', 'b', 'a'] == pytest.approx(pwcca(y, x))
    assert v['mrr', 'a', 'c'] == pytest.approx(mrr(x, x @ _orth(5, 3)))

def test_plot_similarity_draws_the_matrix():
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    x, y = _pair(60, 5, 7, seed=21)
    t = similarity_table({'a': x, 'b': y}, metrics=['cka'])
    ax = plot_similarity(t)
    assert ax.get_title() == 'cka' and [l.get_text() for l in ax.get_xticklabels()] == ['a', 'b']
    plt.close('all')

def test_permuted_gives_chance_level():
    x, _ = _pair(500, 6)
    assert permuted('mrr', x, x) < 0.05
    assert permuted(mean_cosine, x + 5, x + 5, seed=1) > 0.9   # a shared offset inflates mean cosine

# ---------- chunk_size: one rule everywhere ----------
_CHUNKED = [lambda x, c: knn(x, x, 2, chunk_size=c), lambda x, c: knn(x, x, 2, 'euclidean', chunk_size=c),
            lambda x, c: knn(x, x, 2, 'l1', chunk_size=c)] + [
            (lambda f: lambda x, c: f(x, x + 1, chunk_size=c))(f) for f in
            (jaccard_knn, mutual_knn, cross_jaccard_knn, cknna, mrr, top_k_accuracy, mean_cosine, cka, svcca, pwcca,
             canonical_correlations, procrustes_distance)] + [lambda x, c: cka(x, x + 1, kernel='rbf', chunk_size=c)]

@pytest.mark.parametrize('i', range(len(_CHUNKED)))
def test_chunk_size_is_a_positive_integer_or_none(i):
    x, _ = _pair(30, 4)
    f = _CHUNKED[i]
    for bad in (0, -3, 2.5, True, '8'):
        with pytest.raises(ValueError, match='`chunk_size` must be a positive integer or None'): f(x, bad)
    ref = f(x, None)
    for good in (1, 7, np.int64(30)):
        got = f(x, good)
        if isinstance(ref, tuple): assert all(torch.allclose(a, b) for a, b in zip(got, ref))
        elif isinstance(ref, torch.Tensor): assert torch.allclose(got, ref)
        else: assert got == pytest.approx(ref, abs=1e-7)

# ---------- float32: the precision users run (references in float64 prove the formula, these prove the code) ----------
def _far(n=2000, d=16, shift=300., seed=23):
    "Float32 standard normal data shifted far from the origin (the issue's case)"
    return torch.randn(n, d, generator=_gen(seed)) + shift

def test_float32_euclidean_knn_far_from_the_origin(device):
    x = _far().to(device)
    ref_v, ref_i = knn(x.double(), x.double(), 10, 'euclidean', exclude_self=True)  # the same float32 values, float64 search
    v, i = knn(x, x, 10, 'euclidean', exclude_self=True)
    assert v.dtype == torch.float32
    assert torch.equal(i, ref_i)
    assert torch.allclose(v.double(), ref_v, atol=1e-4, rtol=0)   # distances ~ 3-4; the uncentred expansion is off by ~1e-2
    q = x[:100] + 0.5                                               # queries that are not keys
    assert torch.equal(knn(q, x, 5, 'euclidean')[1], knn(q.double(), x.double(), 5, 'euclidean')[1])

def test_float32_jaccard_is_translation_invariant():
    "The issue's check: on 2,000 x 16 float32 data shifted by 300, the uncentred expansion gave 0.90"
    x = _far()
    assert jaccard_knn(x, x - x.mean(0), sim='euclidean') == 1.
    y = x @ _orth(16, 1).float() + 0.3 * torch.randn(2000, 16, generator=_gen(24))
    for f in (jaccard_knn, mutual_knn):   # the float32 values searched in float64 give the same neighbourhoods
        assert f(x, y, sim='euclidean') == f(x.double(), y.double(), sim='euclidean')

def test_half_precision_euclidean_search_is_computed_in_float32():
    x = _far(500, 8, shift=30.).half()
    ref_v, ref_i = knn(x.double(), x.double(), 5, 'euclidean', exclude_self=True)
    v, i = knn(x, x, 5, 'euclidean', exclude_self=True)
    assert v.dtype == torch.float32 and torch.allclose(v.double(), ref_v, atol=1e-4, rtol=0)

@pytest.mark.parametrize('sim', ['cosine', 'euclidean', 'dot'])
def test_float32_retrieval_matches_float64(sim):
    x = _far(1000, 16, shift=300. if sim == 'euclidean' else 0.)
    y = x + 0.5 * torch.randn(1000, 16, generator=_gen(25))
    for f in (lambda a, b: mrr(a, b, sim=sim), lambda a, b: mrr(a, b, 5, sim=sim), lambda a, b: top_k_accuracy(a, b, 3, sim=sim)):
        assert f(x, y) == pytest.approx(f(x.double(), y.double()), abs=1e-6)

def test_float32_cknna_matches_float64():
    x, y = _pair(600, 12, 9, seed=26)
    for sim in ('cosine', 'dot'):
        assert cknna(x.float(), y.float(), 10, sim) == pytest.approx(cknna(x.float().double(), y.float().double(), 10, sim), abs=1e-5)

def test_float32_cka_far_from_the_origin():
    x, y = _pair(3000, 16, 12, seed=27)
    xf, yf = (x + 300).float(), (y - 500).float()
    xd, yd = xf.double().numpy(), yf.double().numpy()
    xc, yc = xd - xd.mean(0), yd - yd.mean(0)
    ref = (np.linalg.norm(xc.T @ yc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)))
    assert cka(xf, yf) == pytest.approx(ref, abs=1e-6)
    assert cka(xf, yf, debiased=True) == pytest.approx(cka(xf.double(), yf.double(), debiased=True), abs=1e-6)
    assert cka(xf[:500], yf[:500], kernel='rbf') == pytest.approx(cka(xf[:500].double(), yf[:500].double(), kernel='rbf'), abs=1e-5)
