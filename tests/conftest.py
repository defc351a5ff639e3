"Shared fixtures: every device-aware test runs on each device this machine has (CPU always, CUDA/MPS when present)."
import os
from pathlib import Path
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

@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    "An empty cache folder (LATENT_COMM_CACHE) for this test only"
    monkeypatch.setenv('LATENT_COMM_CACHE', str(tmp_path/'cache'))
    return tmp_path/'cache'

def needs_file(path, package):
    "Skip unless `path` exists, naming the Debian package that installs it"
    if not Path(path).exists(): pytest.skip(f"needs the Debian package `{package}` (apt-get install {package})")

def _files(folder):
    "The files under `folder` other than lock files"
    return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob('*') if p.is_file() and not p.name.endswith('.lock'))
