"""GPU backend. Without a GPU: the package imports and asking for the GPU gives a clear error (the
batched stage itself runs here on the host executor: tests/test_batch.py). With one (tests marked
`cuda`): the CUDA build of the kernels equals the NumPy twins, the batched stage on CuPy and the GPU
backend equal the CPU backend for the same picks."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from gpudecode import BackendUnavailableError, VideoSampler, get_backend, index_video, sample_gops
from gpudecode.kernels import reference as ref
from gpudecode.kernels.reference import grid_shape


def _has_gpu() -> bool:
    try:
        from gpudecode._cuda import import_cupy

        import_cupy()
        return True
    except BackendUnavailableError:
        return False


@pytest.mark.skipif(_has_gpu(), reason="checks the behaviour on machines without a GPU")
def test_gpu_backend_without_a_gpu_is_a_clear_error():
    with pytest.raises(BackendUnavailableError) as info:
        get_backend("gpu")
    # both install forms: the README installs from a checkout, where `pip install gpudecode[cuda13]` is wrong
    assert 'pip install -e ".[cuda13]"' in str(info.value) and 'pip install "gpudecode[cuda13]"' in str(info.value)
    with pytest.raises(BackendUnavailableError):
        VideoSampler(backend="gpu")


def test_auto_backend_says_which_it_chose(capsys):
    backend = get_backend("auto", verbose=True)
    out = capsys.readouterr().out
    assert f"using the {backend.name.upper()} backend" in out


def test_importing_the_package_needs_no_gpu_packages():
    code = ("import sys, gpudecode, gpudecode.gpu, gpudecode._cuda; "
            "assert 'cupy' not in sys.modules and 'PyNvVideoCodec' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture
def cuda():
    from gpudecode._cuda import cuda_kernels

    return cuda_kernels()


@pytest.mark.cuda
def test_cuda_kernels_equal_twins(cuda):
    import cupy as cp

    from tests.test_kernels_host import random_blocks, random_planes

    rng = np.random.default_rng(0)
    width, height = 340, 256
    mvs = random_blocks(rng, width, height)
    d_mvs = cp.asarray(mvs.view(np.uint8))
    flag = cp.zeros(1, cp.int32)
    src = want = None
    bufs = [cp.empty((height, width), cp.int32) for _ in range(2)]
    for step, shift in enumerate((3, 0, 3)):
        grid = cp.zeros((*grid_shape(width, height, shift), 2), cp.int16)
        cuda.rasterize_mv(d_mvs.data.ptr, len(mvs), grid, shift, flag)
        want_grid, _ = ref.rasterize_mv(mvs, width, height, shift)
        np.testing.assert_array_equal(grid.get(), want_grid)
        cuda.accumulate_step(src, bufs[step % 2], grid, shift)
        want = ref.accumulate_step(want, want_grid, shift, width, height)
        np.testing.assert_array_equal(bufs[step % 2].get(), want)
        src = bufs[step % 2]
    y, u, v = random_planes(rng, width, height)
    dy, du, dv = cp.asarray(y), cp.asarray(u), cp.asarray(v)
    rgb = cp.empty((height, width, 3), cp.uint8)
    cuda.yuv420_to_rgb(dy, du, dv, du.strides[0], 1, 1, rgb)
    np.testing.assert_array_equal(rgb.get(), ref.yuv420_to_rgb(y, u, v, width, height, 1))
    mv, res = cp.empty((height, width, 2), cp.int16), cp.empty((height, width, 3), cp.int16)
    cuda.gather_mv_residual(src, rgb, dy, du, dv, du.strides[0], 1, 1, mv, res)
    want_mv, want_res = ref.gather_mv_residual(want, rgb.get(), y, u, v, width, height, 1)
    np.testing.assert_array_equal(mv.get(), want_mv)
    np.testing.assert_array_equal(res.get(), want_res)


@pytest.mark.cuda
def test_cupy_stage_equals_cpu_backend_on_a_batch(real_dir):
    """The checks the host executor passes in CI (tests/test_batch.py), on CuPy: a batch of real clips in
    four launches, bit-exact with the CPU backend, twice in a row (double buffer, no host sync inside)."""
    from gpudecode._cuda import CupyExecutor
    from gpudecode.packet import CpuStage
    from gpudecode.stage import GpuStage
    from tests.test_batch import assert_batch_equals_cpu

    ixs = [index_video(real_dir / n, cache=False) for n in ("v_SoccerJuggling_g23_c01.avi", "v_GGSY1Qvo990.mp4")] * 2
    ex = CupyExecutor()
    stage, gpu = CpuStage(), GpuStage(ex)
    for rep in range(2):
        picks = [sample_gops(ix.gop_lengths, 8, mode="train", rng=rep * 10 + i) for i, ix in enumerate(ixs)]
        before = len(ex.launches)
        batch = gpu([stage(ix, p) for ix, p in zip(ixs, picks)])
        assert len(ex.launches) - before == 4
        batch.ready.synchronize()
        assert_batch_equals_cpu(batch, ixs, picks, to_host=lambda a: a.get())


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["v_SoccerJuggling_g23_c01.avi", "v_GGSY1Qvo990.mp4"])
def test_gpu_upload_backend_equals_cpu_backend(real_dir, name):
    """Same YUV planes, same kernels: I-frame, MV and residual are bit-exact."""
    from gpudecode.cpu import CpuBackend
    from gpudecode.gpu import GpuBackend

    index = index_video(real_dir / name, cache=False)
    picks = sample_gops(index.gop_lengths, 8, mode="train", rng=2)
    cpu = CpuBackend().decode(index, picks)
    gpu = GpuBackend(pixels="upload").decode(index, picks)
    for m in ("iframe", "mv", "residual"):
        np.testing.assert_array_equal(getattr(gpu, m).get(), getattr(cpu, m), err_msg=m)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["v_SoccerJuggling_g23_c01.avi", "v_GGSY1Qvo990.mp4"])
def test_gpu_nvdec_backend_matches_cpu_backend(real_dir, name):
    """MVs exact; pixels within a small tolerance (NVDEC's reconstruction may differ from FFmpeg's by rounding)."""
    pytest.importorskip("PyNvVideoCodec")
    from gpudecode.cpu import CpuBackend
    from gpudecode.gpu import GpuBackend

    index = index_video(real_dir / name, cache=False)
    picks = sample_gops(index.gop_lengths, 8, mode="test")
    cpu = CpuBackend().decode(index, picks)
    gpu = GpuBackend(pixels="nvdec").decode(index, picks)
    np.testing.assert_array_equal(gpu.mv.get(), cpu.mv)
    for m in ("iframe", "residual"):
        diff = np.abs(getattr(gpu, m).get().astype(np.int32) - getattr(cpu, m).astype(np.int32))
        assert np.mean(diff) < 1.0 and np.percentile(diff, 99) <= 4, (m, diff.mean())
