"Discovering parallel anchors with no known pairs: recovery, honest failure, seeds, errors, and the pieces."
import sys
import pytest, torch
import torch.nn.functional as F
from latent_comm.anchors import bootstrap_anchors, pair_precision
from latent_comm.discovery import (discover_anchors, csls_match, similarity_descriptors, gromov_wasserstein,
                                   _gap_pvalue, _confidence, _unit_center_unit, _sinkhorn)

def _copy(n=1500, d=32, noise=0.3, seed=0, device='cpu'):
    "x, a rotated, rescaled, shifted, noisy, shuffled copy y, and truth (x[i] <-> y[truth[i]])"
    g = torch.Generator().manual_seed(seed)
    spec = torch.arange(1, d + 1) ** -0.5
    x = torch.randn(n, d, generator=g) * spec
    Q = torch.linalg.qr(torch.randn(d, d, generator=g)).Q
    perm = torch.randperm(n, generator=g)
    y = (3 * x @ Q + noise * spec.norm() / d ** 0.5 * torch.randn(n, d, generator=g) + 0.5)[perm]
    truth = torch.empty_like(perm); truth[perm] = torch.arange(n)
    return x.to(device), y.to(device), truth.to(device)

def _mixture(n=1500, d=32, clusters=12, seed=0):
    "Samples of a Gaussian mixture with random centres and a decaying spectrum"
    g = torch.Generator().manual_seed(seed)
    spec = torch.arange(1, d + 1) ** -0.5
    centres = 1.5 * torch.randn(clusters, d, generator=g)
    return (torch.randn(n, d, generator=g) + centres[torch.randint(clusters, (n,), generator=g)]) * spec

@pytest.mark.parametrize('seed', [0, 1])
def test_recovers_a_known_permutation(seed, device):
    "the issue's acceptance test: a rotated, rescaled, noisy, shuffled copy is matched to itself with no known pair"
    x, y, truth = _copy(seed=seed, device=device)
    res = discover_anchors(x, y, n_sample=300, truth=truth)
    assert res.pairs.dtype == torch.long and res.pairs.shape[1] == 2 and res.pairs.device.type == device.type
    assert len(res.pairs) >= 0.95 * len(x) and pair_precision(res.pairs, truth) >= 0.99
    assert res.score > 0.9 and bool((res.confidence >= 0.5).all())
    assert len(set(res.pairs[:, 0].tolist())) == len(res.pairs) == len(set(res.pairs[:, 1].tolist()))  # one-to-one
    assert bool((res.confidence[:-1] >= res.confidence[1:]).all())  # most confident first
    assert res.history[-1]['stage'] == 'match' and res.history[-1]['precision'] >= 0.99

@pytest.mark.parametrize('make', ['same spectrum', 'mixtures'])
def test_unrelated_spaces_get_low_confidence(make):
    "independent spaces with the same statistics: few pairs pass 0.5 and the score is near 0, far below a related pair's"
    x, y, truth = _copy(seed=2)
    other = _copy(seed=9)[0] if make == 'same spectrum' else _mixture(seed=9)
    if make == 'mixtures':  # a rotated copy of a mixture, against an independent mixture
        x, y = _mixture(seed=3), _mixture(seed=3) @ torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(8))).Q
    related = discover_anchors(x, y, n_sample=300)
    unrelated = discover_anchors(other, y, n_sample=300)
    assert unrelated.score < 0.05 and len(unrelated.pairs) <= 0.01 * len(other)
    assert related.score > 0.9 and related.score > 10 * max(unrelated.score, 0.01)

def test_seed_pairs_help():
    "random samples share few points: structure alone finds nothing, ten known pairs recover the whole copy"
    x, y, truth = _copy(n=2000, noise=0.5, seed=3)
    alone = discover_anchors(x, y, sample='random', n_sample=400, max_iter=10)
    seeds = torch.stack([torch.arange(10), truth[:10]], 1)
    helped = discover_anchors(x, y, seeds, sample='random', n_sample=400, max_iter=10)
    assert len(alone.pairs) < 50 and alone.score < 0.05
    assert len(helped.pairs) > 1900 and pair_precision(helped.pairs, truth) >= 0.99
    assert torch.equal(helped.pairs[:10], seeds) and bool((helped.confidence[:10] == 1).all())

def test_output_feeds_the_existing_api():
    "pairs are anchors for bootstrap_anchors; the translator maps x onto y; n_anchors caps the pairs"
    x, y, truth = _copy(n=800, seed=4)
    res = discover_anchors(x, y, n_sample=300, n_anchors=100)
    assert len(res.pairs) == 100 and pair_precision(res.pairs, truth) == 1.0
    grown = bootstrap_anchors(x, y, res.pairs[:20], 200)
    assert pair_precision(grown, truth) == 1.0
    err = (res.translator.transform(x) - y[truth]).norm(dim=1).mean()
    assert err < 0.2 * y.std(0).norm()

def test_other_dimension_and_half_precision():
    x, y, truth = _copy(n=600, seed=5)
    W = torch.linalg.qr(torch.randn(48, 32, generator=torch.Generator().manual_seed(0))).Q.mT  # isometry into 48 dims
    res = discover_anchors(x, y @ W, n_sample=300, truth=truth)
    assert len(res.pairs) > 550 and pair_precision(res.pairs, truth) >= 0.99
    rh = discover_anchors(x.half(), y.half(), n_sample=300)
    assert len(rh.pairs) > 550 and pair_precision(rh.pairs, truth) >= 0.99
    assert rh.confidence.dtype == torch.float32 and rh.translator.transform(x[:3].half()).dtype == torch.float16

def test_errors_name_the_argument():
    x, y, truth = _copy(n=200)
    with pytest.raises(ValueError, match='`x` has dtype torch.float32 but `y` has dtype torch.float64'): discover_anchors(x, y.double())
    with pytest.raises(ValueError, match='`y` must have 2 dimensions'): discover_anchors(x, y[:, 0])
    with pytest.raises(ValueError, match='`x` needs at least 4 samples'): discover_anchors(x[:3], y)
    bad = y.clone(); bad[5, 2] = float('nan')
    with pytest.raises(ValueError, match='`y` contains NaN or Inf'): discover_anchors(x, bad)
    with pytest.raises(ValueError, match='`k` must be an integer with 3 <= k < 200'): discover_anchors(x, y, k=200)
    with pytest.raises(ValueError, match='`k` must be an integer with 3 <= k'): discover_anchors(x, y, k=2)
    with pytest.raises(ValueError, match='`seed_pairs` column 0 must index `x`'): discover_anchors(x, y, torch.tensor([[200, 0]]))
    with pytest.raises(ValueError, match='`seed_pairs` must be a \\(k, 2\\) integer tensor'): discover_anchors(x, y, torch.tensor([[0.5, 1.]]))
    with pytest.raises(ValueError, match='`sample` must be one of'): discover_anchors(x, y, sample='central')
    with pytest.raises(ValueError, match='`n_sample` must be an integer >= 11'): discover_anchors(x, y, n_sample=10)
    with pytest.raises(ValueError, match='`n_refine` must be an integer >= 11'): discover_anchors(x, y, n_refine=True)
    with pytest.raises(ValueError, match='`n_anchors` must be an integer >= 2'): discover_anchors(x, y, torch.tensor([[0, 1], [1, 2]]), n_anchors=1)
    with pytest.raises(ValueError, match='`min_confidence` must be between 0 and 1'): discover_anchors(x, y, min_confidence=-0.1)
    with pytest.raises(ValueError, match='`epsilon` must be positive'): discover_anchors(x, y, epsilon=0.)
    with pytest.raises(ValueError, match='`max_iter` must be an integer >= 1'): discover_anchors(x, y, max_iter=0)
    with pytest.raises(ValueError, match='`x` has dimension 32 but `y` has dimension 8'): csls_match(x, y[:, :8])

def test_mismatched_devices(cuda):
    x, y, _ = _copy(n=100)
    with pytest.raises(ValueError, match='`x` is on cpu but `y` is on cuda'): discover_anchors(x, y.to(cuda))

def test_missing_pot_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, 'ot', None)
    x, y, _ = _copy(n=100)
    with pytest.raises(ImportError, match="pip install 'latent_comm\\[ot\\]', or pip install pot"): discover_anchors(x, y, n_sample=50)

@pytest.mark.parametrize('chunk_size', [None, 7, 64])
def test_csls_match_against_a_dense_reference(chunk_size):
    "forward matches are the CSLS argmax among each row's k nearest by cosine; mutual pairs agree both ways"
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(150, 6, generator=g), torch.randn(120, 6, generator=g)
    m = csls_match(a, b, k=5, chunk_size=chunk_size)
    S = F.normalize(a, dim=1) @ F.normalize(b, dim=1).mT
    rx, ry = S.topk(5, 1).values.mean(1), S.topk(5, 0).values.mean(0)
    C = 2 * S - rx[:, None] - ry[None]
    cand = torch.full_like(C, -float('inf')).scatter(1, S.topk(5, 1).indices, C.gather(1, S.topk(5, 1).indices))
    assert torch.equal(m.forward, cand.argmax(1))
    candb = torch.full_like(C, -float('inf')).scatter(0, S.topk(5, 0).indices, C.gather(0, S.topk(5, 0).indices))
    i, j = m.pairs.unbind(1)
    assert torch.equal(m.forward[i], j) and torch.equal(candb.argmax(0)[j], i)
    assert m.pvalue.shape == (len(m.pairs),) and bool(((m.pvalue > 0) & (m.pvalue <= 1)).all())
    assert abs(m.objective - float(cand.max(1).values.mean())) < 1e-5

def test_gap_pvalue_is_uniform_under_the_null():
    g = torch.Generator().manual_seed(1)
    tails = (-torch.log(torch.rand(20000, 100, generator=g, dtype=torch.float64))).topk(10, 1).values
    p = _gap_pvalue(tails)
    for q in (0.01, 0.1, 0.5): assert abs(float((p < q).double().mean()) - q) < 0.01

def test_confidence_controls_the_false_share():
    "the set of pairs at confidence >= c holds at most about 1 - c false ones"
    g = torch.Generator().manual_seed(2)
    true_p = torch.rand(3000, generator=g, dtype=torch.float64) ** 4 * 0.01
    p = torch.cat([true_p, torch.rand(2000, generator=g, dtype=torch.float64)])
    c = _confidence(p, 6000)  # 1,000 queries without a mutual match
    for level in (0.5, 0.8, 0.95):
        kept = c >= level
        assert float(kept[3000:].sum() / kept.sum()) <= 1 - level + 0.02
    assert len(_confidence(p[:0], 10)) == 0

def test_descriptors_ignore_rotations_and_follow_the_order():
    x = torch.randn(300, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    Q = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64)).Q
    p = torch.randperm(300)
    torch.testing.assert_close(similarity_descriptors(x @ Q)[p], similarity_descriptors(x[p]))

def test_gromov_wasserstein_recovers_a_permutation():
    x, y, truth = _copy(n=300, d=16, noise=0.1, seed=6)
    xs, ys = _unit_center_unit(x), _unit_center_unit(y)
    d = similarity_descriptors(xs).double() @ similarity_descriptors(ys).double().mT
    plan = gromov_wasserstein(xs, ys, _sinkhorn(1 - d))
    assert plan.shape == (300, 300) and abs(float(plan.sum()) - 1) < 1e-6
    assert float((plan.argmax(1) == truth).float().mean()) >= 0.99
