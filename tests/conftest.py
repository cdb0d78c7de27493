"""Shared fixtures: paths to ../shared fixtures, the GPU mark, and a per-test index cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL = SHARED / "fixtures" / "real"
SPLITS = SHARED / "fixtures" / "splits"
#: The one skip reason of every test that reads the optional fixtures (README, "Test fixtures").
FIXTURES_ABSENT = ("optional fixtures (real UCF-101/HMDB-51/Kinetics/ActivityNet/NTU clips, split files) not in "
                   "../shared/fixtures beside the checkout: nothing to do, the suite is complete without them "
                   "(README, 'Test fixtures')")


def _gpu_available() -> bool:
    try:
        import cupy  # noqa: F401

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # CuPy missing, no driver, no device: all mean "no GPU here"
        return False


_GPU = None


def gpu_here() -> bool:
    """A real GPU with CuPy (decided once per session)."""
    global _GPU
    if _GPU is None:
        _GPU = _gpu_available()
    return _GPU


@pytest.fixture(autouse=True)
def _cuda_double_for_cuda_tests(request, monkeypatch):
    """`cuda` tests run on the GPU when there is one; otherwise on the strict CUDA double (tests/cudadouble),
    except with GPUDECODE_REQUIRE_GPU=1, where they run as they are and fail loudly without a GPU.

    On the double, the order is GPUDECODE_DOUBLE_ORDER or one of its orders chosen by the test's name; a
    test fails if the double reported a race or an
    illegal address, even when its own assertions passed."""
    if request.node.get_closest_marker("cuda") is None or gpu_here() or os.environ.get("GPUDECODE_REQUIRE_GPU") == "1":
        yield None
        return
    from tests import cudadouble

    order = os.environ.get("GPUDECODE_DOUBLE_ORDER") or cudadouble.ORDERS[
        sum(request.node.nodeid.encode()) % len(cudadouble.ORDERS)]
    double = cudadouble.install(monkeypatch, order)
    yield double
    try:
        reports = double.drain()
    finally:
        cudadouble.uninstall(double)
    assert not reports, f"the CUDA double ({order}) reported:\n" + "\n".join(reports)


@pytest.fixture
def cuda_double(_cuda_double_for_cuda_tests):
    """The CUDA double of this `cuda` test (None on a real GPU)."""
    return _cuda_double_for_cuda_tests


@pytest.fixture(autouse=True)
def _isolated_index_cache(tmp_path_factory, monkeypatch):
    """Each test session indexes into its own cache, never the user's ~/.cache."""
    monkeypatch.setenv("GPUDECODE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "gpudecode-cache"))


@pytest.fixture
def seeded_torch():
    """torch seeded with 0 for the test, its global RNG state restored afterwards."""
    import torch

    state = torch.get_rng_state()
    torch.manual_seed(0)
    yield
    torch.set_rng_state(state)


@pytest.fixture(scope="session")
def real_dir() -> Path:
    if not REAL.is_dir():
        pytest.skip(FIXTURES_ABSENT)
    return REAL


@pytest.fixture(scope="session")
def splits_dir() -> Path:
    if not SPLITS.is_dir():
        pytest.skip(FIXTURES_ABSENT)
    return SPLITS


def make_tiny_synthetic(root: Path, videos_per_class: int):
    """A tiny synthetic set (8 classes, 32x32, 24 frames) at ``root``; its DataConfig."""
    from teamnet.config import DataConfig
    from teamnet.datasets import ensure_synthetic

    data = DataConfig(dataset="synthetic", root=str(root), train_list="train.txt", test_list="test.txt",
                      class_index="classInd.txt", synth_videos_per_class=videos_per_class, synth_size=(32, 32),
                      synth_frames=24)
    ensure_synthetic(data, progress=False)
    return data


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """The tiny synthetic set (8 classes x 4 clips: 24 train, 8 test), made once per session."""
    return make_tiny_synthetic(tmp_path_factory.getbasetemp() / "tiny_synth", 4)


@pytest.fixture(scope="session")
def tiny(tiny_data) -> Path:
    """The tiny synthetic set's folder."""
    return Path(tiny_data.root)
