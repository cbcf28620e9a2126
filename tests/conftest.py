"""Shared test fixtures: where the real data lives, and skipping without it."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does (ccd_dist/cli.py); before torch loads

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CCD_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_path(*parts) -> Path:
    """Path under ../shared/data, or skip the test with the reason it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set CCD_SHARED_DATA or place ../shared/data)")
    return path


@pytest.fixture
def shared_data():
    return shared_path


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: one torch thread avoids thread-pool overhead on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray (2 CPUs, loopback) for the whole test session, always shut down."""
    ray = pytest.importorskip("ray")
    from ccd_dist.distributed.executor import RayExecutor

    executor = RayExecutor(num_cpus=2)
    yield executor
    if ray.is_initialized():
        ray.shutdown()
