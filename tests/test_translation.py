"Tests for latent_comm.translation: ground truth recovery, bad input, devices, persistence."
import hashlib, json, struct
from pathlib import Path
import pytest, torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from sklearn.base import clone
import latent_comm.translation as translation
from latent_comm.translation import (Translator, ESTIMATORS, TRANSFORMS, FORMAT, procrustes, scaled_procrustes, lstsq, affine,
                                     ridge, fit_pipeline, apply_pipeline, invert_pipeline, pipeline_names, register_estimator,
                                     _moments, _constant_dims)


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
    with pytest.raises(ValueError, match="'lstsq' needs at least 9 .*estimator='ridge'"): Translator('lstsq').fit(x[:6], y[:6])
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
    @register_estimator('_test_identity', min_anchors=lambda dx, dy, centred: 3, override=True)
    def _identity(x, y): return torch.eye(x.shape[1], y.shape[1], dtype=x.dtype), x.new_zeros(y.shape[1])
    try:
        x, y, *_ = _similarity(n=50, d=8)
        t = Translator(_identity).fit(x, y)
        assert t.estimator_ == '_test_identity'
        with pytest.raises(ValueError, match="needs at least 3"): Translator('_test_identity').fit(x[:2], y[:2])
    finally: ESTIMATORS.pop('_test_identity')
    with pytest.raises(TypeError, match=r'`min_anchors` must take \(d_x, d_y, centred\)'):
        register_estimator('_test_old', min_anchors=lambda dx, dy: dx)
    assert '_test_old' not in ESTIMATORS

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
    assert meta['format'] == 'latent_comm.translation.Translator' and meta['format_version'] == '2'
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


# ---------------------------------------------------------------- issue 11: speed without losing precision

def test_moments_one_pass_any_block_size(device):
    g = torch.Generator().manual_seed(11)
    x = (torch.randn(1000, 7, generator=g, dtype=torch.float64) * 3 + 4).to(device)
    y = (torch.randn(1000, 5, generator=g, dtype=torch.float64) - 2).to(device)
    for rows in (1, 7, 999, None):
        mx, vx, my, vy, c = _moments(x, y, rows=rows)
        assert torch.allclose(mx, x.mean(0)) and torch.allclose(vx, x.var(0, correction=0))
        assert torch.allclose(my, y.mean(0)) and torch.allclose(vy, y.var(0, correction=0))
        assert torch.allclose(c, (x - x.mean(0)).mT @ (y - y.mean(0)))
        m, v = _moments(y, rows=rows)
        assert torch.allclose(m, y.mean(0)) and torch.allclose(v, y.var(0, correction=0))

@pytest.mark.parametrize('est', ['procrustes', 'scaled_procrustes'])
@pytest.mark.parametrize('pre', [('center', 'scale'), 'center', 'standard', 'scale', ('center', 'standard', 'scale'), ('scale', 'center')])
def test_statistics_pass_equals_materialised_pipelines(device, est, pre):
    "The default route (one statistics pass, no transformed copies) fits what the estimator fits on transformed data"
    g = torch.Generator().manual_seed(12)
    x = torch.randn(600, 24, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3, 24, dtype=torch.float64) + 4
    y = x @ torch.randn(24, 16, generator=g, dtype=torch.float64) - 1 + 0.2 * torch.randn(600, 16, generator=g, dtype=torch.float64)
    x, y = x.to(device), y.to(device)
    names = pipeline_names(pre)
    (xs, xt), (ys, yt) = fit_pipeline(x, names), fit_pipeline(y, names)
    w, _ = ESTIMATORS[est](xt, yt)
    t = Translator(est, x_transform=pre, y_transform=pre).fit(x, y)
    assert _rel(t.matrix_, w) < 1e-9
    for side, states in (('x', xs), ('y', ys)):
        for i, s in enumerate(states):
            for k, v in s.items(): assert torch.allclose(t._buffers[f'{side}{i}_{k}_'], v, rtol=1e-10, atol=1e-12), (side, i, k)
    assert _rel(t.transform(x), invert_pipeline(apply_pipeline(x, names, xs) @ w, names, ys)) < 1e-9

@pytest.mark.parametrize('pre', [('center', 'scale'), 'standard'])
def test_float32_fit_far_from_the_origin(device, pre):
    "Anchors whose mean is 100 times their spread: float32 matches float64 (the shortcut x^T y - n m_x m_y^T would not)"
    g = torch.Generator().manual_seed(13)
    x = torch.randn(20_000, 16, generator=g, dtype=torch.float64) * 0.05 + 5
    y = 2 * x @ _rot(16, g, torch.float64) + 3 + 1e-3 * torch.randn(20_000, 16, generator=g, dtype=torch.float64)
    ref = Translator(x_transform=pre, y_transform=pre).fit(x, y)
    t = Translator(x_transform=pre, y_transform=pre).fit(x.float().to(device), y.float().to(device))
    assert _rel(t.matrix_.cpu().double(), ref.matrix_) < 1e-4
    assert _rel(t.transform(x[:500].float().to(device)).cpu().double(), ref.transform(x[:500])) < 1e-5

def test_dead_dimensions_found_without_reading_the_whole_target():
    "Without column statistics, a sample of rows is screened and the candidates confirmed on every row"
    import warnings
    g = torch.Generator().manual_seed(14)
    y = torch.randn(10_000, 12, generator=g)
    y[:, 3] = 0.7; y[:, 8] = 1e-30 * y[:, 0]
    y[:, 5] = 0.; y[-3:, 5] = 1.  # active in three rows the sample skips: not dead
    assert _constant_dims(y, rows=500).tolist() == [3, 8] == _constant_dims(y, y.var(0)).tolist()
    x = torch.randn(10_000, 12, generator=g)
    with pytest.warns(UserWarning, match=r"2 \(near-\)constant dimension\(s\) \[3, 8\]"):
        Translator(x_transform=None, y_transform=None).fit(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        Translator(x_transform=None, y_transform=None).fit(x, torch.randn(10_000, 12, generator=g))


# ---------------------------------------------------------------- issue 11: defects

def test_lstsq_needs_one_more_anchor_when_the_source_is_centred():
    "Centred anchors sum to zero: n of them span n - 1 dimensions, so least squares needs d_x + 1 of them"
    g = torch.Generator().manual_seed(15)
    x, y = torch.randn(40, 8, generator=g), torch.randn(40, 3, generator=g)
    for pre in (('center', 'scale'), 'center', 'standard', ('scale', 'center')):
        with pytest.raises(ValueError, match="'lstsq' needs at least 9 .*centred source"): Translator('lstsq', x_transform=pre).fit(x[:8], y[:8])
        Translator('lstsq', x_transform=pre).fit(x[:9], y[:9])
    for pre in (None, 'scale', 'l2'): Translator('lstsq', x_transform=pre).fit(x[:8], y[:8])
    with pytest.raises(ValueError, match="'affine' needs at least 9"): Translator('affine').fit(x[:8], y[:8])
    Translator('affine', x_transform=None).fit(x[:9], y[:9])
    with pytest.raises(ValueError, match="each fold is fitted on 8 of the 10 anchors, but estimator 'lstsq' needs at least 9"):
        Translator('lstsq').cross_validate(x[:10], y[:10], folds=5)

@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_least_squares_on_rank_deficient_anchors_is_the_minimum_norm_solution(device, dtype):
    "Anchors in a 10-dimensional subspace of 16 dimensions: every device returns X^+ Y, the same on every run"
    g = torch.Generator().manual_seed(16)
    x = torch.randn(200, 10, generator=g, dtype=torch.float64) @ torch.randn(10, 16, generator=g, dtype=torch.float64)
    y = x @ torch.randn(16, 5, generator=g, dtype=torch.float64) + 0.01 * torch.randn(200, 5, generator=g, dtype=torch.float64)
    ref = torch.linalg.pinv(x) @ y
    ref_affine = torch.linalg.pinv(torch.cat([x, torch.ones(200, 1, dtype=torch.float64)], 1)) @ y
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    X, Y = x.to(device, dtype), y.to(device, dtype)
    W, _ = lstsq(X, Y)
    assert _rel(W.cpu().double(), ref) < tol
    assert torch.equal(lstsq(X, Y)[0], W)
    Wa, ba = affine(X, Y)
    assert _rel(torch.cat([Wa, ba[None]]).cpu().double(), ref_affine) < tol
    t = Translator('lstsq', x_transform=None, y_transform=None).fit(X, Y)
    assert _rel(t.matrix_.cpu().double(), ref) < tol

def test_score_computes_only_the_requested_metric(monkeypatch):
    x, y, *_ = _similarity(n=200, d=8)
    t = Translator().fit(x, y)
    def boom(*args, **kwargs): raise AssertionError('the O(n^2) MRR was computed')
    monkeypatch.setattr(translation, 'mrr', boom)
    assert t.score(x, y) == pytest.approx(1, abs=1e-6) and t.score(x, y, 'mse') < 1e-8
    with pytest.raises(AssertionError, match='MRR was computed'): t.score(x, y, 'mrr')

def test_score_accepts_what_transform_accepts(device):
    x, y, *_ = _similarity(n=240, d=8, noise=0.5, device=device)
    t = Translator().fit(x, y)
    xb, yb = x.view(4, 60, 8), y.view(4, 60, 8)
    assert t.score(xb, yb) == pytest.approx(t.score(x, y), abs=1e-6)
    assert t.score(xb, yb, 'mse') == pytest.approx(t.score(x, y, 'mse'), rel=1e-5)
    assert t.score(xb, yb, 'mrr') == pytest.approx(sum(t.score(a, b, 'mrr') for a, b in zip(xb, yb)) / 4)
    assert t.score(x[0], y[0]) == pytest.approx(F.cosine_similarity(t.transform(x[0]), y[0], dim=0).item(), abs=1e-6)
    with pytest.raises(ValueError, match=r"`x` must have shape \(\.\.\., n, d\)"): t.score(x[0], y[0], 'mrr')
    assert t.score(x.half(), y.double(), 'mse') == pytest.approx(t.score(x, y, 'mse'), rel=1e-2)
    t64 = Translator().fit(x.double(), y.double())
    assert t64.score(x, y.half()) == pytest.approx(t.score(x, y), abs=1e-3)
    with pytest.raises(ValueError, match='but `y` has shape'): t.score(xb, y)

def test_cross_validate_uses_the_constructors_folds():
    x, y, *_ = _similarity(n=8, d=4, noise=0.1)
    t = Translator(folds=4)
    assert t.cross_validate(x, y) == t.cross_validate(x, y, folds=4) != t.cross_validate(x, y, folds=2)
    with pytest.raises(ValueError, match='`folds` must be an integer from 2 to 4'): Translator(folds=5).cross_validate(x, y)


# ---------------------------------------------------------------- issue 12: one digest, atomic saves

def _old_digest(tensors, meta):
    "The checksum of format version 1 (the module's own digest before core.digest)"
    h = hashlib.sha256()
    for k in sorted(meta):
        if k != 'sha256': h.update(json.dumps([k, meta[k]]).encode())
    for k in sorted(tensors):
        v = tensors[k].detach().cpu().contiguous()
        h.update(json.dumps([k, str(v.dtype), list(v.shape)]).encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()

def test_version_1_file_is_refused_by_its_version(tmp_path):
    from safetensors.torch import save_file
    x, y, *_ = _similarity(n=100, d=8)
    t = Translator().fit(x, y)
    tensors = {k: v.contiguous() for k, v in t.state_dict().items()}
    config = {**t.get_params(), 'x_transform': ['center', 'scale'], 'y_transform': ['center', 'scale']}
    meta = {'format': FORMAT, 'format_version': '1', 'config': json.dumps(config),
            'fitted': json.dumps({'estimator_': 'procrustes', 'cv_results_': None})}
    meta['sha256'] = _old_digest(tensors, meta)
    save_file(tensors, str(tmp_path / 'v1.safetensors'), metadata=meta)
    with pytest.raises(ValueError, match="v1.safetensors' has format version '1'; this version of latent_comm reads version 2"):
        Translator.load(tmp_path / 'v1.safetensors')

def test_save_never_leaves_a_half_written_file(tmp_path, monkeypatch):
    x, y, *_ = _similarity(n=100, d=8)
    p = tmp_path / 't.safetensors'
    Translator().fit(x, y).save(p)
    good = p.read_bytes()
    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(good[:len(good) // 2]); raise OSError('disk full')
    monkeypatch.setattr(translation, 'save_file', crash)
    with pytest.raises(OSError, match='disk full'): Translator('ridge').fit(x, y).save(p)
    assert p.read_bytes() == good and [q.name for q in tmp_path.iterdir()] == ['t.safetensors']
    with pytest.raises(OSError, match='disk full'): Translator().fit(x, y).save(tmp_path / 'new.safetensors')
    assert [q.name for q in tmp_path.iterdir()] == ['t.safetensors']

@pytest.mark.parametrize('estimator', ['procrustes', 'scaled_procrustes', 'lstsq', 'affine', 'ridge', 'auto'])
@pytest.mark.parametrize('tf', [None, 'center', 'standard', ('center', 'scale'), 'l2'])
def test_fit_names_the_nonfinite_anchor_set(estimator, tf, capfd):
    "Whichever way fit checks finiteness (before a solver, after a product and an SVD), the error names the argument, and LAPACK prints nothing"
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(100, 8, generator=g), torch.randn(100, 8, generator=g)
    for bad in (float('nan'), float('inf'), -float('inf')):
        for side in ('x', 'y'):
            xb, yb = x.clone(), y.clone()
            (xb if side == 'x' else yb)[3, 2] = bad
            with pytest.raises(ValueError, match=f'`{side}_anchors` contains NaN or Inf'):
                Translator(estimator, x_transform=tf, y_transform=tf).fit(xb, yb)
    assert 'ERROR' not in capfd.readouterr().err

def test_solve_takes_qr_when_well_conditioned_and_the_rank_revealing_path_otherwise():
    "The fast QR path gives gelsd's answer on well-conditioned anchors; two equal columns go to gelsd (minimum norm)"
    from latent_comm.translation import _solve, _solve_qr
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 96, generator=g), torch.randn(400, 50, generator=g)
    ref = torch.linalg.lstsq(a.double(), b.double(), driver='gelsd').solution.float()
    assert _solve_qr(a, b) is not None
    assert torch.allclose(_solve(a, b), ref, atol=1e-4, rtol=1e-4)
    assert torch.equal(_solve(a, b), _solve(a, b))  # the same bits from one call to the next
    a[:, 5] = a[:, 6]  # rank-deficient: QR must refuse, and the minimum-norm solution splits the weight evenly
    assert _solve_qr(a, b) is None
    w = _solve(a, b)
    assert torch.allclose(w[5], w[6], atol=1e-4)
    ref = torch.linalg.lstsq(a.double(), b.double(), driver='gelsd').solution.float()
    assert torch.allclose(w, ref, atol=1e-3, rtol=1e-3)


def test_standard_scaling_keeps_a_dead_dimension_float32():
    """A float32 target column with a spread of 1e-33 (all-MiniLM-L6-v2's dead LayerNorm units) keeps that spread as its scale.
    Its squares underflowed to 0 in float32 once, the column was taken for a constant with scale 1, and per-dimension
    Procrustes into MiniLM-L6 fell to chance in E4."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(800, 16, generator=g), torch.randn(800, 16, generator=g)
    y[:, 5] = 1e-33 * (2 + torch.randn(800, generator=g))
    t = Translator('procrustes', x_transform='standard', y_transform='standard').fit(x, y)
    std = dict(t.named_buffers())['y0_std_']
    assert torch.allclose(std[5].double(), y[:, 5].double().std(correction=0), rtol=1e-3)
    out = t.transform(x)
    assert out.dtype == torch.float32 and out[:, 5].abs().max() < 1e-31  # the dead dimension stays (nearly) constant
