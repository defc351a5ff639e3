"Relative projection: invariances (property tests), chunking, devices, dtypes, bad input, the module and the estimator."
import warnings
import numpy as np
import pytest, torch
from hypothesis import given, settings, strategies as st
from torch import nn
from latent_comm.relative import relative_projection, RelativeProjection, AGGREGATIONS, NORMALIZATIONS
from latent_comm.scikit import RelativeTransformer
from latent_comm.similarity import SIMILARITIES

def _data(seed, n=40, m=12, d=8, dtype=torch.float64, device='cpu'):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    return x.to(device), x[:m].clone().to(device)

def _orth(d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0].to(dtype)

# ---- property tests -------------------------------------------------------------------------------------------------
PROP = settings(max_examples=25, deadline=None)

@PROP
@given(seed=st.integers(0, 2**31 - 1), s=st.floats(1e-2, 1e2), d=st.integers(2, 16))
def test_cosine_invariant_to_orthogonal_maps_and_positive_scaling(seed, s, d):
    x, a = _data(seed, d=d)
    Q = _orth(d, seed + 1)
    assert torch.allclose(relative_projection(s * x @ Q, s * a @ Q), relative_projection(x, a), atol=1e-9)

@PROP
@given(seed=st.integers(0, 2**31 - 1), shift=st.floats(-100, 100), s=st.floats(0.1, 10))
def test_centered_cosine_invariant_to_translations(seed, shift, s):
    x, a = _data(seed)
    b = shift * torch.randn(8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    Q = _orth(8, seed + 2)
    f = lambda t: s * t @ Q + b
    assert torch.allclose(relative_projection(f(x), f(a), center=True), relative_projection(x, a, center=True), atol=1e-7)

@PROP
@given(seed=st.integers(0, 2**31 - 1), shift=st.floats(-100, 100))
def test_euclidean_invariant_to_isometries(seed, shift):
    x, a = _data(seed)
    Q, b = _orth(8, seed + 3), torch.full((8,), shift, dtype=torch.float64)
    for center in (False, True):
        got = relative_projection(x @ Q + b, a @ Q + b, 'euclidean', center=center)
        assert torch.allclose(got, relative_projection(x, a, 'euclidean', center=center), atol=1e-8)

@PROP
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 60), chunk=st.integers(1, 70),
       sim=st.sampled_from(sorted(SIMILARITIES)), normalize=st.sampled_from((None,) + NORMALIZATIONS),
       topk=st.sampled_from([None, 1, 5]), power=st.sampled_from([None, 2.0]), center=st.booleans())
def test_chunked_equals_unchunked(seed, n, chunk, sim, normalize, topk, power, center):
    x, a = _data(seed, n=max(n, 12))
    x = x[:n]
    kw = dict(sim=sim, normalize=normalize, topk=topk, power=power, center=center)
    assert torch.allclose(relative_projection(x, a, chunk_size=chunk, **kw), relative_projection(x, a, **kw), atol=1e-10)

# ---- devices and dtypes ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_follows_device_and_dtype(device, dtype):
    x, a = _data(0, dtype=dtype, device=device)
    xb = torch.stack([x, 2 * x])
    r = relative_projection(xb, a, normalize='l2', chunk_size=7)
    assert r.shape == (2, 40, 12) and r.dtype == dtype and r.device.type == device.type
    ref = relative_projection(xb.double(), a.double(), normalize='l2')
    tol = 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-5
    assert torch.allclose(r.double(), ref, atol=tol)

@pytest.mark.parametrize('sim', sorted(SIMILARITIES))
def test_cpu_and_cuda_agree(sim, cuda):
    x, a = _data(1)
    kw = dict(sim=sim, center=True, normalize='standard', chunk_size=9)
    assert torch.allclose(relative_projection(x.to(cuda), a.to(cuda), **kw).cpu(), relative_projection(x, a, **kw), atol=1e-8)

def test_module_moves_between_devices(cuda):
    x, a = _data(2, dtype=torch.float32)
    rp = RelativeProjection(a, sim=['cosine', 'l1'], aggregation='weighted')
    assert torch.allclose(rp.to(cuda)(x.to(cuda)).cpu(), rp.cpu()(x), atol=1e-5)

# ---- bad input -------------------------------------------------------------------------------------------------------
def test_bad_input_names_the_argument():
    x, a = _data(0)
    cases = [(dict(anchors=a[:, :3]), '`x` has dimension 8 but `anchors` has dimension 3'),
             (dict(topk=13), '`topk`=13 is larger than the number of anchors \\(12\\)'),
             (dict(anchors=torch.zeros(3, 8, dtype=torch.float64)), '`anchors` has zero-norm rows'),
             (dict(anchors=a[:1], center=True), '`anchors` has zero-norm rows \\[0\\] \\(after centering'),
             (dict(normalize='minmax'), '`normalize` must be None or one of'),
             (dict(sim='manhattan'), "`sim`='manhattan' is not a known similarity")]
    for kw, msg in cases:
        kw = {'anchors': a, **kw}
        with pytest.raises(ValueError, match=msg): relative_projection(x, **kw)
    for bad_value in (float('nan'), float('inf'), -float('inf')):
        xb, ab = x.clone(), a.clone()
        xb[5, 2] = bad_value; ab[1, 1] = bad_value
        with pytest.raises(ValueError, match='`x` contains NaN or Inf'): relative_projection(xb, a)
        with pytest.raises(ValueError, match='`anchors` contains NaN or Inf'): relative_projection(x, ab)

def test_zero_rows_of_x_get_zero_cosine():
    x, a = _data(0)
    x[3] = 0
    r = relative_projection(x, a)
    assert torch.equal(r[3], torch.zeros(12, dtype=torch.float64)) and torch.isfinite(r).all()

def test_sparse_asif_form():
    x, a = _data(4)
    r = relative_projection(x, a, topk=3, power=2., normalize='l2')
    assert ((r != 0).sum(-1) == 3).all() and torch.allclose(r.norm(dim=-1), torch.ones(40, dtype=torch.float64))
    dense = relative_projection(x, a)
    kept = dense.topk(3, dim=-1).indices
    assert torch.equal(r.topk(3, dim=-1).indices.sort(-1).values, kept.sort(-1).values)
    sm = relative_projection(x, a, topk=3, normalize='softmax', temperature=0.1)
    assert torch.allclose(sm.sum(-1), torch.ones(40, dtype=torch.float64)) and ((sm > 0).sum(-1) == 3).all()

# ---- module -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('aggregation', AGGREGATIONS)
def test_product_of_invariances(aggregation, device):
    torch.manual_seed(0)
    x, a = _data(5, dtype=torch.float32, device=device)
    sims = ['cosine', 'euclidean', 'linf']
    rp = RelativeProjection(a, sim=sims, aggregation=aggregation).to(device)
    out = rp(x)
    assert out.shape == (40, 36 if aggregation == 'concat' else 12)
    Q = _orth(8, 7, torch.float32).to(device)
    perm = torch.eye(8, device=device)[torch.randperm(8, generator=torch.Generator().manual_seed(1))]
    # every similarity here is invariant to a signed permutation, and standardised rows cancel the scale
    assert torch.allclose(rp(3 * x @ (-perm), anchors=3 * a @ (-perm)), out, atol=1e-4)
    if aggregation in ('weighted', 'attention'):
        out.pow(2).mean().backward()
        assert all(p.grad is not None for p in rp.parameters())

def test_module_gradients_through_anchors_and_state_dict():
    x, a = _data(6, dtype=torch.float32)
    enc = nn.Linear(8, 8)
    rp = RelativeProjection(sim=['cosine', 'rbf'], aggregation='attention', n_anchors=12)
    rp(enc(x), anchors=enc(a)).sum().backward()
    assert enc.weight.grad is not None
    src = RelativeProjection(a, sim=['cosine', 'rbf'], aggregation='attention')
    dst = RelativeProjection(torch.zeros_like(a), sim=['cosine', 'rbf'], aggregation='attention')
    dst.load_state_dict(src.state_dict())
    assert torch.allclose(dst(x), src(x))
    assert torch.equal(dst.anchors, a)

def test_module_gradcheck():
    x, a = _data(7, n=5, m=3, d=4)
    rp = RelativeProjection(sim=['cosine', 'euclidean'], aggregation='mean', normalize='l2')
    assert torch.autograd.gradcheck(lambda t, u: rp(t, anchors=u), (x.requires_grad_(), a.requires_grad_()))

@pytest.mark.parametrize('aggregation', AGGREGATIONS)
def test_one_similarity_builds_no_aggregator(aggregation):
    "With one similarity nothing is aggregated: no parameters (before: unused weights or attention), no n_anchors needed"
    x, a = _data(8, dtype=torch.float32)
    for rp in (RelativeProjection(a, sim='cosine', aggregation=aggregation), RelativeProjection(sim=['euclidean'], aggregation=aggregation)):
        assert list(rp.parameters()) == [] and not hasattr(rp, 'weights') and not hasattr(rp, 'attn')
        out = rp(x) if rp.anchors is not None else rp(x, anchors=a)
        assert torch.allclose(out, relative_projection(x, a, rp.sims[0]))
    assert set(RelativeProjection(a, aggregation=aggregation).state_dict()) == {'anchors'}

def test_several_similarities_build_their_aggregator():
    _, a = _data(9, dtype=torch.float32)
    assert [n for n, _ in RelativeProjection(a, sim=['cosine', 'l1'], aggregation='weighted').named_parameters()] == ['weights']
    assert len(list(RelativeProjection(a, sim=['cosine', 'l1'], aggregation='attention').parameters())) == 4
    assert list(RelativeProjection(a, sim=['cosine', 'l1'], aggregation='mean').parameters()) == []

def test_chunk_size_is_checked_everywhere():
    x, a = _data(10)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match='`chunk_size` must be a positive integer or None'): relative_projection(x, a, chunk_size=bad)
        with pytest.raises(ValueError, match='`chunk_size` must be a positive integer or None'): RelativeProjection(a, chunk_size=bad)
        with pytest.raises(ValueError, match='`chunk_size` must be a positive integer or None'):
            RelativeTransformer(n_anchors=5, chunk_size=bad).fit(x.numpy()).transform(x.numpy())
    assert torch.allclose(relative_projection(x, a, chunk_size=np.int64(7)), relative_projection(x, a))
    r = RelativeTransformer(n_anchors=5, chunk_size=3).fit(x.numpy())
    assert np.allclose(r.transform(x.numpy()), RelativeTransformer(n_anchors=5).fit(x.numpy()).transform(x.numpy()))

def test_module_errors():
    with pytest.raises(ValueError, match='`aggregation` must be one of'): RelativeProjection(sim=['cosine', 'l1'], aggregation='max')
    with pytest.raises(ValueError, match='needs the number of anchors'): RelativeProjection(sim=['cosine', 'l1'], aggregation='attention')
    with pytest.raises(ValueError, match='`anchors` must be passed to forward'): RelativeProjection()(torch.randn(3, 2))
    with pytest.raises(ValueError, match='`n_anchors` must be a positive integer or None'): RelativeProjection(sim=['cosine', 'l1'], n_anchors=0)

# ---- scikit-learn estimator -------------------------------------------------------------------------------------------
@pytest.mark.parametrize('est', [RelativeTransformer(n_anchors=5),
                                 RelativeTransformer(n_anchors=2, method='fps', sim='euclidean', center=True, normalize='l2'),
                                 RelativeTransformer(n_anchors=3, method='kmeans', topk=2, power=2., normalize='softmax')])
def test_check_estimator(est):
    from sklearn.utils.estimator_checks import check_estimator
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        results = check_estimator(est, on_fail=None)
    bad = [(r['check_name'], repr(r['exception'])) for r in results if r['status'] not in ('passed', 'skipped')]
    assert not bad, bad
    skipped = {r['check_name'] for r in results if r['status'] == 'skipped'}
    assert skipped <= {'check_array_api_input'}, skipped  # needs SCIPY_ARRAY_API=1; no array API support claimed

def test_pipeline_clone_and_device(device):
    from sklearn.pipeline import make_pipeline
    from sklearn.linear_model import LogisticRegression
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV
    x = torch.randn(300, 10, generator=torch.Generator().manual_seed(0)).numpy()
    y = (x[:, 0] > 0).astype(int)
    pipe = make_pipeline(RelativeTransformer(n_anchors=30, method='stratified', device=str(device)), LogisticRegression(C=100, max_iter=1000))
    pipe.fit(x[:200], y[:200])
    assert pipe.score(x[200:], y[200:]) > 0.85
    c = clone(pipe)
    assert c.get_params()['relativetransformer__n_anchors'] == 30 and not hasattr(c[0], 'anchors_')
    gs = GridSearchCV(pipe, {'relativetransformer__sim': ['cosine', 'euclidean']}, cv=2).fit(x, y)
    assert gs.best_params_['relativetransformer__sim'] in ('cosine', 'euclidean')
    rt = RelativeTransformer(n_anchors=20).fit(x.astype(np.float32))
    assert rt.transform(x.astype(np.float32)).dtype == np.float32 and rt.transform(x.astype(np.float64)).dtype == np.float64

def test_transformer_errors():
    x = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match='`n_anchors`=11 anchors requested but `x` has only 10 samples'): RelativeTransformer(n_anchors=11).fit(x)
    with pytest.raises(ValueError, match=r'`labels` \(one class label per sample\) is required'):
        RelativeTransformer(n_anchors=3, method='stratified').fit(x)
    with pytest.raises(ValueError, match='`topk`=4 is larger than the number of anchors'):
        RelativeTransformer(n_anchors=3, topk=4).fit(x).transform(x)

def test_numpy_integers_are_accepted():
    x = np.random.default_rng(0).normal(size=(30, 4))
    r = RelativeTransformer(n_anchors=np.int64(6), topk=np.int32(2)).fit(x).transform(x)
    assert r.shape == (30, 6) and ((r != 0).sum(1) == 2).all()
