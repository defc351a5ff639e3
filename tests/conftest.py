"Shared fixtures: every device-aware test runs on each device this machine has (CPU always, CUDA/MPS when present)."
import os
import pytest, torch
from latent_comm.core import available_devices

os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('HF_HUB_OFFLINE', '1')

@pytest.fixture(params=available_devices())
def device(request):
    "A torch.device; tests using it run once per available device (ids: cpu, cuda, mps)"
    return torch.device(request.param)

@pytest.fixture
def cuda():
    "The CUDA device, for tests that compare CPU and GPU results; skipped without one"
    if not torch.cuda.is_available(): pytest.skip("no CUDA device on this machine")
    return torch.device('cuda')
