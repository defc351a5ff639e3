"Anchor selection and bootstrapping of parallel anchors."
import numpy as np
import pytest, torch
from hypothesis import given, settings, strategies as st
from latent_comm.anchors import ANCHOR_SELECTORS, select_anchors, bootstrap_anchors, pair_precision, kmeans

def _x(n=120, d=5, seed=0, device='cpu'):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)).to(device)

@pytest.mark.parametrize('method', sorted(ANCHOR_SELECTORS))
def test_selectors_return_distinct_indices(method, device):
    x, y = _x(device=device), torch.arange(120) % 3
    idx = select_anchors(x, 17, method, labels=y, seed=1)
    assert idx.dtype == torch.long and idx.shape == (17,) and idx.device.type == device.type
    assert len(set(idx.tolist())) == 17 and 0 <= int(idx.min()) and int(idx.max()) < 120

@pytest.mark.parametrize('method', ['random', 'stratified', 'fps', 'kmeans'])
def test_same_indices_on_every_device(method, cuda):
    x, y = _x(), torch.arange(120) % 3
    assert torch.equal(select_anchors(x, 10, method, labels=y).cpu(), select_anchors(x.to(cuda), 10, method, labels=y.to(cuda)).cpu())

@settings(max_examples=25, deadline=None)
@given(counts=st.lists(st.integers(1, 30), min_size=1, max_size=6), frac=st.floats(0.01, 1.0), seed=st.integers(0, 100))
def test_stratified_is_balanced(counts, frac, seed):
    y = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    n = max(1, int(frac * len(y)))
    idx = select_anchors(torch.randn(len(y), 3), n, 'stratified', labels=y.numpy(), seed=seed)
    got = torch.bincount(y[idx], minlength=len(counts))
    assert got.sum() == n and (got <= torch.tensor(counts)).all()
    full = got < torch.tensor(counts)  # classes not exhausted differ by at most one anchor
    if full.sum() > 1: assert int(got[full].max() - got[full].min()) <= 1

def test_fps_covers_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0., 0.], [20., 0.], [0., 20.], [20., 20.]])
    x = torch.cat([c + 0.1 * torch.randn(30, 2, generator=g) for c in centres])
    for seed in range(5):
        assert set((select_anchors(x, 4, 'fps', seed=seed) // 30).tolist()) == {0, 1, 2, 3}

def test_kmeans_takes_real_samples_near_centroids():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0., 0.], [20., 0.], [0., 20.]])
    x = torch.cat([c + 0.1 * torch.randn(30, 2, generator=g) for c in centres])
    idx = select_anchors(x, 3, 'kmeans')
    assert set((idx // 30).tolist()) == {0, 1, 2}
    c, lab = kmeans(x, 3)
    assert torch.bincount(lab).tolist() == [30, 30, 30]

def test_first_and_random_prefix():
    x = _x()
    assert torch.equal(select_anchors(x, 5, 'first'), torch.arange(5))
    assert torch.equal(select_anchors(x, 30, seed=4)[:10], select_anchors(x, 10, seed=4))

def test_errors_name_the_argument():
    x = _x()
    with pytest.raises(ValueError, match='`n_anchors`=121 anchors requested but `x` has only 120 samples'): select_anchors(x, 121)
    with pytest.raises(ValueError, match=r'`labels` \(one class label per sample\) is required'): select_anchors(x, 5, 'stratified')
    with pytest.raises(ValueError, match='`method`=.grid. is not a known anchor selector'): select_anchors(x, 5, 'grid')
    with pytest.raises(ValueError, match='`n_anchors` must be a positive integer'): select_anchors(x, 0)
    bad = x.clone(); bad[0, 0] = float('inf')
    with pytest.raises(ValueError, match='`x` contains NaN or Inf'): select_anchors(bad, 5)

def _copy(noise, seed=0, n=1000, d=16, device='cpu'):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    Q = torch.linalg.qr(torch.randn(d, d, generator=g))[0]
    perm = torch.randperm(n, generator=g)
    y = (x @ Q + noise * torch.randn(n, d, generator=g))[perm]
    truth = torch.empty_like(perm); truth[perm] = torch.arange(n)
    return x.to(device), y.to(device), truth.to(device)

@pytest.mark.parametrize('seed', [0, 1])
def test_bootstrap_meets_the_issue_target(seed, device):
    "rotated, noise std 0.2, shuffled; 1,000 points, 16 dims, 10 seed pairs: >= 250 of 300 pairs at precision >= 0.95"
    x, y, truth = _copy(0.2, seed, device=device)
    seeds = torch.stack([torch.arange(10, device=device), truth[:10]], 1)
    pairs, hist = bootstrap_anchors(x, y, seeds, 300, truth=truth, return_history=True)
    assert pairs.shape[1] == 2 and pairs.dtype == torch.long and len(pairs) >= 250
    assert pair_precision(pairs, truth) >= 0.95 and hist[-1]['precision_found'] >= 0.95
    assert torch.equal(pairs[:10], seeds)  # seeds are kept
    assert len(set(pairs[:, 0].tolist())) == len(pairs) == len(set(pairs[:, 1].tolist()))  # one-to-one

def test_bootstrap_assignment_and_dimension_change():
    x, y, truth = _copy(0.1, 2, n=300, d=8)
    W = torch.randn(8, 12, generator=torch.Generator().manual_seed(5))  # the second space has more dimensions
    pairs = bootstrap_anchors(x, y @ W, torch.stack([torch.arange(12), truth[:12]], 1), 100, method='assignment')
    assert len(pairs) == 100 and pair_precision(pairs, truth) >= 0.95

def test_bootstrap_errors():
    x, y, truth = _copy(0.2, n=50, d=4)
    seeds = torch.stack([torch.arange(5), truth[:5]], 1)
    with pytest.raises(ValueError, match='`n_anchors` must be an integer between'): bootstrap_anchors(x, y, seeds, 60)
    with pytest.raises(ValueError, match='`seed_pairs` must be a \\(k, 2\\) integer tensor'): bootstrap_anchors(x, y, seeds.float(), 10)
    with pytest.raises(ValueError, match='`seed_pairs` column 1 must index `y`'): bootstrap_anchors(x, y, seeds + torch.tensor([0, 50]), 10)
    with pytest.raises(ValueError, match='`growth` must be greater than 1'): bootstrap_anchors(x, y, seeds, 10, growth=1.)
    for method in ('mnn', 'assignment'):
        for bad in (0, -1, 2.5):
            with pytest.raises(ValueError, match='`chunk_size` must be a positive integer or None'):
                bootstrap_anchors(x, y, seeds, 10, method=method, chunk_size=bad)
    bad = y.clone(); bad[1, 1] = float('nan')
    with pytest.raises(ValueError, match='`y` contains NaN or Inf'): bootstrap_anchors(x, bad, seeds, 10)

# ---------- selectors registered by users: what they return is checked ----------
@pytest.mark.parametrize('out, msg', [
    (torch.arange(4), '4 indices'), (torch.arange(5.), 'dtype torch.float32'), (torch.tensor([0, 1, 2, 3, 120]), r'indices in 0\.\.120'),
    (torch.tensor([-1, 1, 2, 3, 4]), r'indices in -1\.\.4'), (torch.tensor([0, 1, 2, 2, 3]), 'repeated indices'),
    (torch.zeros(5, 1, dtype=torch.long), r'shape \(5, 1\)'), (torch.ones(5, dtype=torch.bool), 'dtype torch.bool'),
    (np.arange(5.), 'dtype torch.float64'), ('abcde', 'a str, not indices'), (None, 'a NoneType, not indices')])
def test_user_selector_output_is_validated(out, msg):
    x = _x()
    @ANCHOR_SELECTORS.register('_bad_test_selector', override=True)
    def _bad(x, n_anchors, labels=None, seed=0): return out
    try:
        with pytest.raises(ValueError, match=f"anchor selector '_bad_test_selector' returned {msg}; a selector must return 5 "
                                             "distinct integer indices into the 120 rows of `x`"):
            select_anchors(x, 5, '_bad_test_selector')
    finally: del ANCHOR_SELECTORS['_bad_test_selector']
    def my_selector(x, n_anchors, labels=None, seed=0): return out   # a plain callable is named by its __name__
    with pytest.raises(ValueError, match="anchor selector 'my_selector' returned"): select_anchors(x, 5, my_selector)

def test_user_selector_valid_outputs_are_accepted(device):
    x = _x(device=device)
    for out in ([3, 1, 2], np.array([3, 1, 2], dtype=np.int32), torch.tensor([3, 1, 2], dtype=torch.int16)):
        idx = select_anchors(x, 3, lambda x, n_anchors, labels=None, seed=0: out)
        assert idx.dtype == torch.long and idx.device.type == device.type and idx.tolist() == [3, 1, 2]

def test_selectors_receive_the_documented_arguments():
    seen = {}
    def spy(x, n_anchors, labels=None, seed=0):
        seen.update(n_anchors=n_anchors, labels=labels, seed=seed); return torch.arange(n_anchors)
    select_anchors(_x(), np.int64(4), spy, labels='L', seed=7)
    assert seen == dict(n_anchors=4, labels='L', seed=7) and type(seen['n_anchors']) is int

# ---------- kmeans ----------
@pytest.mark.parametrize('max_iter', [0, 1, 2, 5, 50])
def test_kmeans_labels_belong_to_the_returned_centroids(max_iter):
    "Before: the labels were those of the centroids before the last update (wrong for every stop short of convergence)"
    x = torch.randn(400, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    c, lab = kmeans(x, 7, max_iter=max_iter, seed=3)
    assert torch.equal(lab, torch.cdist(x, c).argmin(1))
    if max_iter >= 5:   # and the centroids are the means of their clusters, up to the last move
        means = torch.stack([x[lab == j].mean(0) for j in range(7)])
        assert torch.allclose(c, means, atol=0.1)

def test_kmeans_rejects_bad_arguments():
    x = _x(10, 2)
    with pytest.raises(ValueError, match=r'`n_clusters` must be an integer between 1 and 10 \(the number of samples\), got 11'): kmeans(x, 11)
    with pytest.raises(ValueError, match='`n_clusters` must be an integer between 1 and 10'): kmeans(x, 0)
    with pytest.raises(ValueError, match='`n_clusters` must be an integer'): kmeans(x, 2.0)
    with pytest.raises(ValueError, match='`max_iter` must be an integer at least 0'): kmeans(x, 2, max_iter=-1)
    with pytest.raises(ValueError, match='`tol` must be non-negative'): kmeans(x, 2, tol=-1.)
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match='`chunk_size` must be a positive integer or None'): kmeans(x, 2, chunk_size=bad)
    with pytest.raises(ValueError, match='`x` must have 2 dimensions'): kmeans(x[0], 1)
    with pytest.raises(ValueError, match='`x` contains NaN'): kmeans(x.masked_fill(x > 1, float('nan')), 2)
    c, lab = kmeans(x, 10)   # n_clusters = N: every sample its own cluster
    assert sorted(lab.tolist()) == list(range(10))

def test_kmeans_chunking_and_translation():
    x = _x(300, 4, seed=5).double()
    c1, l1 = kmeans(x, 6, chunk_size=7)
    c2, l2 = kmeans(x, 6)
    assert torch.equal(l1, l2) and torch.allclose(c1, c2)
    c3, l3 = kmeans(x + 1000, 6)   # centroids move with the data, labels do not change
    assert torch.equal(l3, l2) and torch.allclose(c3, c2 + 1000)

# ---------- float32 far from the origin (float64 references on the same values) ----------
def _far(n=2000, d=16, shift=300., seed=7):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift

@pytest.mark.parametrize('method', ['fps', 'kmeans'])
def test_float32_selection_matches_float64_far_from_the_origin(method, device):
    "Before, the uncentred squared-distance expansion made float32 choose other anchors than float64 on this data"
    x = _far().to(device)
    for n in (10, 100):
        assert torch.equal(select_anchors(x, n, method, seed=1), select_anchors(x.double(), n, method, seed=1)), n

def test_half_precision_selection_computes_in_float32():
    x = _far(500, 8, shift=30.).half()
    for method in ('fps', 'kmeans'):
        assert torch.equal(select_anchors(x, 20, method), select_anchors(x.double(), 20, method)), method

def test_float32_kmeans_matches_float64_far_from_the_origin():
    x = _far(1000, 8, shift=1000.)
    c32, l32 = kmeans(x, 12, seed=4)
    c64, l64 = kmeans(x.double(), 12, seed=4)
    assert torch.equal(l32, l64) and torch.allclose(c32.double(), c64, atol=1e-3, rtol=0)
