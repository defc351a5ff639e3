"Similarity registry: shapes, dtypes, devices, the invariances each similarity claims, and user registration."
import math
import pytest, torch
from hypothesis import given, settings, strategies as st
from latent_comm.similarity import SIMILARITIES, Similarity, as_similarity

def _orth(d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]

def _data(seed, n=9, m=5, d=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(m, d, generator=g, dtype=torch.float64)

@pytest.mark.parametrize('name', sorted(SIMILARITIES))
def test_shape_dtype_device(name, device):
    x, a = torch.randn(2, 7, 4, device=device), torch.randn(3, 4, device=device)
    r = SIMILARITIES[name](x, a)
    assert r.shape == (2, 7, 3) and r.dtype == torch.float32 and r.device.type == device.type
    assert torch.allclose(r[1], SIMILARITIES[name](x[1], a), atol=1e-5)

@pytest.mark.parametrize('name', sorted(SIMILARITIES))
def test_half_accumulates_in_float32(name, device):
    x, a = torch.randn(6, 8, device=device), torch.randn(3, 8, device=device)
    r = SIMILARITIES[name](x.half(), a.half())
    assert r.dtype == torch.float16
    assert torch.allclose(r.float(), SIMILARITIES[name](x.half().float(), a.half().float()), atol=1e-2, rtol=1e-2)

@pytest.mark.parametrize('name', sorted(SIMILARITIES))
def test_cpu_and_cuda_agree(name, cuda):
    x, a = _data(0)
    assert torch.allclose(SIMILARITIES[name](x.to(cuda), a.to(cuda)).cpu(), SIMILARITIES[name](x, a), atol=1e-8)

CLAIMS = {'cosine': ['orth', 'scale'], 'angular': ['orth', 'scale'], 'dot': ['orth'], 'euclidean': ['orth', 'shift'],
          'l1': ['perm', 'shift'], 'linf': ['perm', 'shift'], 'rbf': ['orth', 'shift', 'scale'], 'cob': ['orth', 'scale']}

@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), s=st.floats(0.1, 10.), name=st.sampled_from(sorted(CLAIMS)))
def test_claimed_invariances(seed, s, name):
    x, a = _data(seed)
    g = torch.Generator().manual_seed(seed + 1)
    Q, b = _orth(6, seed), 3 * torch.randn(6, generator=g, dtype=torch.float64)
    P = torch.eye(6, dtype=torch.float64)[torch.randperm(6, generator=g)] * torch.where(torch.rand(6, generator=g) < .5, -1., 1.).double()
    maps = {'orth': lambda t: t @ Q, 'scale': lambda t: s * t, 'shift': lambda t: t + b, 'perm': lambda t: t @ P}
    f = SIMILARITIES[name]
    for inv in CLAIMS[name]:
        assert torch.allclose(f(maps[inv](x), maps[inv](a)), f(x, a), atol=1e-7), inv

def test_cosine_zero_rule():
    a = torch.tensor([[1., 0.], [0., 2.]])
    assert torch.equal(SIMILARITIES['cosine'](torch.zeros(3, 2), a), torch.zeros(3, 2))   # zero samples: 0
    assert torch.equal(SIMILARITIES['angular'](torch.zeros(1, 2), a), torch.full((1, 2), .5))
    with pytest.raises(ValueError, match=r'`anchors` has zero-norm rows \[1\]'):
        SIMILARITIES['cosine'](torch.ones(1, 2), torch.tensor([[1., 0.], [0., 0.]]))

def test_known_values():
    x, a = torch.tensor([[0., 0.]]), torch.tensor([[3., 4.]])
    assert SIMILARITIES['euclidean'](x, a).item() == -5. and SIMILARITIES['l1'](x, a).item() == -7.
    assert SIMILARITIES['linf'](x, a).item() == -4.
    assert math.isclose(SIMILARITIES['dot'](torch.ones(1, 4), torch.ones(1, 4)).item(), 2.)

def test_cob_invertible_map():
    x, a = _data(3, m=8)
    R = torch.randn(6, 6, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    assert torch.allclose(SIMILARITIES['cob'](x @ R, a @ R), SIMILARITIES['cob'](x, a), atol=1e-8)
    c = SIMILARITIES['cob'](x, a)
    assert torch.allclose(c @ a, x, atol=1e-8)  # 8 anchors span R^6: exact reconstruction

def test_user_registration():
    @SIMILARITIES.register('test_neg_sq')
    def neg_sq(x, anchors): return -torch.cdist(x, anchors) ** 2
    try:
        s = as_similarity('test_neg_sq')
        assert isinstance(s, Similarity)
        assert s(torch.zeros(1, 2), torch.tensor([[3., 4.]])).item() == -25.
        assert as_similarity(neg_sq) is not None
    finally: del SIMILARITIES['test_neg_sq']
    with pytest.raises(ValueError, match='`sim`=.nope. is not a known similarity'): as_similarity('nope')
