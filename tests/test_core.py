import pytest, torch
from latent_comm.core import Registry, check_tensor, check_compatible, chunk_slices, compute_dtype

def test_registry_resolve_lists_known_names():
    r = Registry('thing')
    r.register('a')(lambda: 1)
    with pytest.raises(ValueError, match="known: a"): r.resolve('b', arg='thing')

def test_check_tensor_on_device(device):
    x = torch.randn(4, 3, device=device)
    assert check_tensor(x, 'x', ndim=2) is x
    x[0, 0] = float('nan')
    with pytest.raises(ValueError, match='`x` contains NaN'): check_tensor(x, 'x')

def test_check_compatible_devices(device):
    a, b = torch.randn(3, 2), torch.randn(3, 2, device=device)
    if device.type == 'cpu': check_compatible(a, b)
    else:
        with pytest.raises(ValueError, match='one device'): check_compatible(a, b)

def test_chunk_slices_cover_exactly():
    for n in range(0, 20):
        for c in (1, 3, 7, 50):
            idx = [i for s in chunk_slices(n, c) for i in range(n)[s]]
            assert idx == list(range(n))

def test_compute_dtype():
    assert compute_dtype(torch.half) == torch.float32
