"Tests for latent_comm.translation: ground truth recovery, bad input, devices, persistence."
import json, struct
import pytest, torch
from hypothesis import given, settings, strategies as st
from sklearn.base import clone
from latent_comm.translation import (Translator, ESTIMATORS, TRANSFORMS, procrustes, scaled_procrustes, lstsq, affine,
                                     ridge, fit_pipeline, apply_pipeline, invert_pipeline, pipeline_names, register_estimator)


def _rot(d, g, dtype=torch.float32, device='cpu'):
    return torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64)).Q.to(dtype=dtype, device=device)

def _similarity(n=800, d=24, seed=0, noise=0., device='cpu', dtype=torch.float32):
    "x, y = s x Q + b (+ noise), with anisotropic, off-centre x; returns x, y, Q, s, b"
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.3, 3, d, dtype=torch.float64) + 2)
    Q, s, b = _rot(d, g, torch.float64), 1.7, torch.randn(d, generator=g, dtype=torch.float64)
    y = s * x @ Q + b + noise * torch.randn(n, d, generator=g, dtype=torch.float64)
    return tuple(t.to(device=device, dtype=dtype) for t in (x, y, Q)) + (s, b.to(device=device, dtype=dtype))

def _effective(t, d_x, like):
    "The affine map (W, b) a fitted Translator applies, read off from its outputs"
    b = t.transform(torch.zeros(1, d_x, dtype=like.dtype, device=like.device))[0]
    return t.transform(torch.eye(d_x, dtype=like.dtype, device=like.device)) - b, b

def _rel(a, b): return ((a - b).norm() / b.norm()).item()


# ---------------------------------------------------------------- ground truth

def test_default_recovers_similarity_transform(device):
    x, y, Q, s, b = _similarity(device=device)
    t = Translator().fit(x, y)
    assert _rel(t.transform(x), y) < 1e-4
    W, b_hat = _effective(t, x.shape[1], x)
    s_hat = (W.norm() / W.shape[0] ** 0.5).item()
    assert abs(s_hat - s) / s < 1e-4
    assert _rel(W / s_hat, Q) < 1e-4
    assert _rel(b_hat, b) < 1e-4
    assert _rel(t.inverse_transform(y), x) < 1e-4

def test_procrustes_estimators_recover_rotation_and_scale(device):
    x, y, Q, s, b = _similarity(device=device, dtype=torch.float64)
    xc, yc = x - x.mean(0), y - y.mean(0)
    R, bias = procrustes(xc, yc)
    assert _rel(R, Q) < 1e-10 and bias.abs().max() == 0
    W, _ = scaled_procrustes(xc, yc)
    assert _rel(W, s * Q) < 1e-10
    t = Translator('scaled_procrustes', x_transform='center', y_transform='center').fit(x, y)
    assert _rel(t.matrix_, s * Q) < 1e-10

def test_paper_preprocessing_is_one_argument_away(device):
    x, y, *_ = _similarity(device=device)
    paper = Translator(x_transform='standard', y_transform='standard').fit(x, y)
    assert paper.x0_std_.shape == (x.shape[1],)
    # per-dimension scaling is not rotation-equivariant: an exact similarity transform is no longer exact
    assert _rel(paper.transform(x), y) > 1e-2 > 1e-4 > _rel(Translator().fit(x, y).transform(x), y)

@pytest.mark.parametrize('dx,dy', [(12, 20), (20, 12), (16, 16)])
def test_lstsq_and_affine_recover_affine_maps(device, dx, dy):
    g = torch.Generator().manual_seed(dx * dy)
    x = torch.randn(300, dx, generator=g, dtype=torch.float64).to(device) + 1
    A = torch.randn(dx, dy, generator=g, dtype=torch.float64).to(device)
    c = torch.randn(dy, generator=g, dtype=torch.float64).to(device)
    y = x @ A + c
    W, b = affine(x, y)
    assert _rel(W, A) < 1e-8 and _rel(b, c) < 1e-8
    assert _rel(lstsq(x, x @ A)[0], A) < 1e-8
    for est, kw in [('lstsq', {}), ('affine', dict(x_transform=None, y_transform=None)), ('affine', {})]:
        t = Translator(est, **kw).fit(x, y)
        W_eff, b_eff = _effective(t, dx, x)
        assert _rel(W_eff, A) < 1e-8 and _rel(b_eff, c) < 1e-8, est

@pytest.mark.parametrize('dx,dy', [(10, 18), (18, 10)])
def test_unequal_dimensions_every_estimator(device, dx, dy):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(100, dx, generator=g).to(device), torch.randn(100, dy, generator=g).to(device)
    for name in ESTIMATORS:
        t = Translator(name).fit(x, y)
        assert t.transform(x).shape == (100, dy) and t.inverse_transform(y).shape == (100, dx)
        assert (t.n_features_in_, t.n_features_out_) == (dx, dy)
    R, _ = procrustes(x.double(), y.double())
    k = torch.eye(min(dx, dy), dtype=torch.float64, device=device)
    assert torch.allclose(R @ R.mT if dx < dy else R.mT @ R, k, atol=1e-10)

def test_orthogonal_inverse_is_exact_on_padded_spaces(device):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, 8, generator=g, dtype=torch.float64).to(device)
    Q = _rot(12, g, torch.float64, device)[:8]  # an isometric embedding of 8 dimensions in 12
    t = Translator().fit(x, 3 * x @ Q + 1)
    assert _rel(t.inverse_transform(t.transform(x)), x) < 1e-10

def test_ridge_handles_few_anchors_and_matches_lstsq_as_alpha_vanishes(device):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(200, 16, generator=g, dtype=torch.float64).to(device)
    A = torch.randn(16, 6, generator=g, dtype=torch.float64).to(device)
    assert _rel(ridge(x, x @ A, alpha=1e-12)[0], A) < 1e-8
    W, _ = ridge(x[:5], x[:5] @ A)  # n < d: dual formula
    assert W.shape == (16, 6) and torch.isfinite(W).all()
    Translator('ridge').fit(x[:5], (x @ A)[:5])

@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), sigma=st.floats(1e-4, 1e-2))
def test_error_grows_smoothly_with_noise(seed, sigma):
    "Same noise direction, scaled: the rotation error is ~linear in the noise level (first-order perturbation)"
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(300, 12, generator=g, dtype=torch.float64)
    Q, E = _rot(12, g, torch.float64), torch.randn(300, 12, generator=g, dtype=torch.float64)
    err = lambda s: _rel(procrustes(x, x @ Q + s * E)[0], Q)
    e0, e1, e2 = err(0.), err(sigma), err(2 * sigma)
    assert e0 < 1e-12
    assert e1 < 5 * sigma  # bounded by a small multiple of the noise
    assert 1.8 < e2 / e1 < 2.2  # and doubles when the noise doubles

def test_noise_levels_order_the_default_translator():
    errs = [_rel(Translator().fit(*_similarity(noise=s)[:2]).matrix_, _similarity()[2]) for s in (0., 0.01, 0.1, 1.)]
    assert errs[0] < 1e-5 and errs == sorted(errs)


# ---------------------------------------------------------------- transforms

@pytest.mark.parametrize('names', [('center',), ('standard',), ('center', 'scale'), ('scale',), ('center', 'standard', 'scale')])
def test_invertible_pipelines_round_trip(device, names):
    x = torch.randn(50, 7, dtype=torch.float64, device=device) * 3 + 1
    states, z = fit_pipeline(x, names)
    assert torch.allclose(apply_pipeline(x, names, states), z)
    assert torch.allclose(invert_pipeline(z, names, states), x, atol=1e-12)

def test_l2_inverse_restores_mean_norm(device):
    x = torch.randn(50, 7, device=device) * 5
    states, z = fit_pipeline(x, ('l2',))
    back = invert_pipeline(z, ('l2',), states)
    assert torch.allclose(back.norm(dim=-1), x.norm(dim=-1).mean().expand(50), rtol=1e-5)
    t = Translator(x_transform=('center', 'l2'), y_transform=('center', 'l2')).fit(x, x @ _rot(7, torch.Generator().manual_seed(0), device=device))
    assert t.transform(x).shape == x.shape

def test_rotation_equivariance_of_transforms():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(100, 6, generator=g, dtype=torch.float64) * torch.arange(1., 7., dtype=torch.float64) + 3
    Q = _rot(6, g, torch.float64)
    for name in ('center', 'scale', 'l2'):
        (s,), z = fit_pipeline(x, (name,))
        (_,), zq = fit_pipeline(x @ Q, (name,))
        assert torch.allclose(zq, z @ Q, atol=1e-10), name
    (_,), z = fit_pipeline(x, ('standard',))
    (_,), zq = fit_pipeline(x @ Q, ('standard',))
    assert not torch.allclose(zq, z @ Q, atol=1e-3)


@pytest.mark.parametrize('pre', [('center', 'scale'), 'standard', ('center', 'l2'), None, ('scale', 'center', 'standard')])
def test_inputs_are_never_modified(device, pre):
    "Pipelines work in place on their own intermediates only"
    x, y, *_ = _similarity(n=100, d=8, device=device)
    for xa, ya in ((x, y), (x.half(), y.half())):
        x0, y0 = xa.clone(), ya.clone()
        t = Translator(x_transform=pre, y_transform=pre).fit(xa, ya)
        t.transform(xa); t.inverse_transform(ya); t.cross_validate(xa, ya, folds=2)
        states, _ = fit_pipeline(xa, pipeline_names(pre))
        invert_pipeline(apply_pipeline(xa, pipeline_names(pre), states), pipeline_names(pre), states)
        assert torch.equal(xa, x0) and torch.equal(ya, y0)


# ---------------------------------------------------------------- bad input

def test_bad_input_names_the_argument():
    x, y, *_ = _similarity(n=100, d=8)
    with pytest.raises(ValueError, match='`x_anchors` has 100 anchors but `y_anchors` has 99'): Translator().fit(x, y[:-1])
    for bad_val in (float('nan'), float('inf')):
        bad = y.clone(); bad[5, 2] = bad_val
        with pytest.raises(ValueError, match='`y_anchors` contains NaN or Inf'): Translator().fit(x, bad)
        with pytest.raises(ValueError, match='`x_anchors` contains NaN or Inf'): Translator().fit(bad, y)
    with pytest.raises(ValueError, match="'lstsq' needs at least 8 .*estimator='ridge'"): Translator('lstsq').fit(x[:6], y[:6])
    with pytest.raises(ValueError, match="'affine' needs at least 9"): Translator('affine').fit(x[:8], y[:8])
    with pytest.raises(ValueError, match='not fitted: call fit'): Translator().transform(x)
    with pytest.raises(ValueError, match='not fitted'): Translator().inverse_transform(x)
    t = Translator().fit(x, y)
    with pytest.raises(ValueError, match='`x` has dimension 7 but this Translator was fitted on dimension 8'): t.transform(x[:, :7])
    with pytest.raises(ValueError, match='`y` has dimension 9'): t.inverse_transform(torch.randn(3, 9))
    with pytest.raises(ValueError, match='`x` contains NaN'): t.transform(torch.full((2, 8), float('nan')))
    with pytest.raises(TypeError, match='`x_anchors` must be a torch.Tensor'): Translator().fit(x.numpy(), y)
    with pytest.raises(ValueError, match="`estimator`='svd' is not a known estimator"): Translator('svd')
    with pytest.raises(ValueError, match="`y_transform` contains 'whiten'"): Translator(y_transform=('center', 'whiten'))
    with pytest.raises(ValueError, match='`folds` must be an integer'): Translator(folds=1)

def test_wrong_device_input(cuda):
    x, y, *_ = _similarity(n=100, d=8)
    t = Translator().fit(x, y)
    with pytest.raises(ValueError, match='call .to'): t.transform(x.to(cuda))
    with pytest.raises(ValueError, match='one device'): Translator().fit(x, y.to(cuda))

def test_half_precision_inputs(device):
    x, y, *_ = _similarity(n=400, d=16, device=device)
    t = Translator().fit(x.half(), y.half())
    assert t.matrix_.dtype == torch.float32
    out = t.transform(x.half())
    assert out.dtype == torch.float16 and _rel(out.float(), y) < 1e-2
    tb = Translator('lstsq').fit(x.bfloat16(), y.bfloat16())
    assert tb.transform(x.bfloat16()).dtype == torch.bfloat16


# ---------------------------------------------------------------- module, sklearn, devices

def test_module_follows_device_and_state_dict(device):
    x, y, *_ = _similarity(n=200, d=8)
    t = Translator().fit(x, y)
    ref = t.transform(x)
    t.to(device)
    assert all(b.device.type == device.type for b in t.buffers())
    assert torch.allclose(t.transform(x.to(device)).cpu(), ref, atol=1e-5)
    t2 = Translator(); t2.load_state_dict(t.state_dict())
    assert torch.equal(t2.transform(x.to(device)), t.transform(x.to(device)))

def test_cpu_and_cuda_agree(cuda):
    x, y, *_ = _similarity(n=500, d=32, noise=0.1)
    for name in ESTIMATORS:
        a = Translator(name).fit(x, y).transform(x)
        b = Translator(name).fit(x.to(cuda), y.to(cuda)).transform(x.to(cuda)).cpu()
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-3), name

def test_sklearn_protocol():
    t = Translator('ridge', x_transform='standard', estimator_kwargs={'alpha': 0.5}, folds=3)
    c = clone(t)
    assert c.get_params() == t.get_params() and c is not t
    assert c.set_params(estimator='affine', estimator_kwargs=None) is c and c.estimator == 'affine'
    with pytest.raises(ValueError, match='not a parameter'): c.set_params(alpha=2)
    x, y, *_ = _similarity(n=100, d=8)
    f = clone(t.fit(x, y))
    assert not f.is_fitted and t.is_fitted
    assert 'estimator=' in repr(t)

def test_callable_estimator_and_registration():
    @register_estimator('_test_identity', min_anchors=lambda dx, dy: 3, override=True)
    def _identity(x, y): return torch.eye(x.shape[1], y.shape[1], dtype=x.dtype), x.new_zeros(y.shape[1])
    try:
        x, y, *_ = _similarity(n=50, d=8)
        t = Translator(_identity).fit(x, y)
        assert t.estimator_ == '_test_identity'
        with pytest.raises(ValueError, match="needs at least 3"): Translator('_test_identity').fit(x[:2], y[:2])
    finally: ESTIMATORS.pop('_test_identity')

def test_cross_validate_and_auto(device):
    x, y, *_ = _similarity(n=400, d=16, noise=0.05, device=device)
    cv = Translator().cross_validate(x, y, folds=4)
    assert set(cv) == {'cosine', 'mse', 'mrr'}
    assert 0.9 < cv['cosine'] <= 1 and cv['mse'] > 0 and 0.9 < cv['mrr'] <= 1
    g = torch.Generator().manual_seed(0)
    unrelated = Translator().cross_validate(x, torch.randn(400, 16, generator=g).to(device), folds=4)
    assert unrelated['mrr'] < 0.2 and unrelated['cosine'] < 0.3
    A = torch.randn(16, 16, generator=g).to(device)
    auto = Translator('auto', folds=4).fit(x, x @ A + 0.1 * torch.randn(400, 16, generator=g).to(device))
    assert auto.estimator_ in ('lstsq', 'affine', 'ridge') and set(auto.cv_results_) == set(ESTIMATORS)
    assert Translator('auto').fit(*_similarity(n=300, d=8)[:2]).estimator_ == 'procrustes'
    with pytest.raises(ValueError, match='`folds` must be an integer from 2 to'): Translator().cross_validate(x[:6], y[:6], folds=4)

def test_score_metrics():
    x, y, *_ = _similarity(n=200, d=8)
    t = Translator().fit(x, y)
    assert t.score(x, y) == pytest.approx(1, abs=1e-6) and t.score(x, y, 'mrr') == pytest.approx(1)
    assert t.score(x, y, metric='mse') < 1e-8
    with pytest.raises(ValueError, match='`metric`'): t.score(x, y, metric='r2')


# ---------------------------------------------------------------- persistence

def test_save_load_round_trip(tmp_path, device):
    x, y, *_ = _similarity(n=300, d=12, noise=0.1, device=device)
    for t in (Translator().fit(x, y), Translator('auto', x_transform='standard', y_transform=None, folds=3).fit(x, y),
              Translator('ridge', estimator_kwargs={'alpha': 0.2}).fit(x.double(), y.double())):
        p = tmp_path / 't.safetensors'
        t.save(p)
        back = Translator.load(p, device=device)
        assert back.get_params() == t.get_params()
        assert (back.estimator_, back.cv_results_) == (t.estimator_, t.cv_results_)
        assert torch.equal(back.transform(x.to(t.matrix_.dtype)), t.transform(x.to(t.matrix_.dtype)))
        assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), t.state_dict().values()))

def test_saved_file_is_plain_safetensors(tmp_path):
    "One file: an 8-byte header length, a JSON header (tensors + string metadata), raw tensor bytes; no pickle"
    x, y, *_ = _similarity(n=100, d=8)
    p = tmp_path / 't.safetensors'
    Translator().fit(x, y).save(p)
    raw = p.read_bytes()
    (n,) = struct.unpack('<Q', raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop('__metadata__')
    assert meta['format'] == 'latent_comm.translation.Translator' and meta['format_version'] == '1'
    assert json.loads(meta['config'])['x_transform'] == ['center', 'scale']
    assert set(header) == {'matrix_', 'bias_', 'inverse_', 'x0_mean_', 'x1_scale_', 'y0_mean_', 'y1_scale_'}
    assert b'\x80\x04' not in raw[:8 + n]  # no pickle protocol marker in the header

def test_truncated_and_corrupted_files_raise(tmp_path):
    x, y, *_ = _similarity(n=100, d=8)
    p = tmp_path / 'good.safetensors'
    Translator().fit(x, y).save(p)
    raw = p.read_bytes()
    bad = tmp_path / 'bad.safetensors'
    for cut in (0, 4, 8, 50, len(raw) // 2, len(raw) - 1):
        bad.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match='bad.safetensors'): Translator.load(bad)
    for pos in range(0, len(raw), 5):  # every 5th byte, header and data
        flipped = bytearray(raw); flipped[pos] ^= 0x21
        bad.write_bytes(bytes(flipped))
        with pytest.raises(ValueError, match='bad.safetensors'): Translator.load(bad)
    with pytest.raises(FileNotFoundError): Translator.load(tmp_path / 'missing.safetensors')

def test_wrong_format_and_version(tmp_path):
    from safetensors.torch import save_file
    p = tmp_path / 'other.safetensors'
    save_file({'a': torch.zeros(2)}, str(p), metadata={'format': 'something'})
    with pytest.raises(ValueError, match="other.safetensors' is not a saved Translator"): Translator.load(p)
    save_file({'a': torch.zeros(2)}, str(p), metadata={'format': 'latent_comm.translation.Translator', 'format_version': '99'})
    with pytest.raises(ValueError, match='format version'): Translator.load(p)

def test_unfitted_or_unregistered_cannot_be_saved(tmp_path):
    with pytest.raises(ValueError, match='not fitted'): Translator().save(tmp_path / 'a.safetensors')
    x, y, *_ = _similarity(n=50, d=4)
    t = Translator(lambda a, b: (torch.eye(4), torch.zeros(4))).fit(x, y)
    with pytest.raises(ValueError, match='not registered'): t.save(tmp_path / 'a.safetensors')

def test_orthogonal_fit_warns_on_constant_target_dimensions(device):
    "A dead target dimension (all-MiniLM-L6-v2 has three) is filled by a rotation: warn, unless scaling per dimension"
    import warnings
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 16, generator=g).to(device)
    y = x @ torch.linalg.qr(torch.randn(16, 16, generator=g)).Q.to(device)
    y[:, [2, 9]] = 1e-33 * torch.randn(300, 2, generator=g).to(device)  # the LayerNorm-gain case: tiny, not exactly 0
    for est in ('procrustes', 'scaled_procrustes'):
        with pytest.warns(UserWarning, match=r"2 \(near-\)constant dimension\(s\) \[2, 9\].*y_transform='standard'"):
            Translator(est).fit(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        Translator('procrustes', x_transform='standard', y_transform='standard').fit(x, y)
        Translator('lstsq').fit(x, y)
        Translator('procrustes').fit(x, x @ torch.eye(16, device=device))  # a healthy target: silent
