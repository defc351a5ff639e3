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
    idx = select_anchors(x, 17, method, y=y, seed=1)
    assert idx.dtype == torch.long and idx.shape == (17,) and idx.device.type == device.type
    assert len(set(idx.tolist())) == 17 and 0 <= int(idx.min()) and int(idx.max()) < 120

@pytest.mark.parametrize('method', ['random', 'stratified', 'fps', 'kmeans'])
def test_same_indices_on_every_device(method, cuda):
    x, y = _x(), torch.arange(120) % 3
    assert torch.equal(select_anchors(x, 10, method, y=y).cpu(), select_anchors(x.to(cuda), 10, method, y=y.to(cuda)).cpu())

@settings(max_examples=25, deadline=None)
@given(counts=st.lists(st.integers(1, 30), min_size=1, max_size=6), frac=st.floats(0.01, 1.0), seed=st.integers(0, 100))
def test_stratified_is_balanced(counts, frac, seed):
    y = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    n = max(1, int(frac * len(y)))
    idx = select_anchors(torch.randn(len(y), 3), n, 'stratified', y=y.numpy(), seed=seed)
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
    with pytest.raises(ValueError, match='`n`=121 anchors requested but `x` has only 120 samples'): select_anchors(x, 121)
    with pytest.raises(ValueError, match=r'`y` \(one class label per sample\) is required'): select_anchors(x, 5, 'stratified')
    with pytest.raises(ValueError, match='`method`=.grid. is not a known anchor selector'): select_anchors(x, 5, 'grid')
    with pytest.raises(ValueError, match='`n` must be a positive integer'): select_anchors(x, 0)
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
    bad = y.clone(); bad[1, 1] = float('nan')
    with pytest.raises(ValueError, match='`y` contains NaN or Inf'): bootstrap_anchors(x, bad, seeds, 10)
