"""Issue 18: the GPU stage's stream ordering, on the strict asynchronous CUDA double (tests/cudadouble).

Three parts: the double is as strict as it claims (races, pools, kernel arguments, devices); one
regression test per bug, each failing before its fix; and each bug re-introduced in a test-only way
(monkeypatch) to show that the double reports it. Runs without a GPU (and is skipped on one: the
`cuda` tests then run on the real device).
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

from gpudecode import VideoSampler, index_video, read_sample, sample_gops
from tests import cudadouble, media
from tests.conftest import gpu_here

pytestmark = pytest.mark.skipif(gpu_here(), reason="a real GPU is here: the cuda tests run on it instead")
MODALITIES = ("iframe", "mv", "residual")


@pytest.fixture(params=["late", "early", "random:3"])
def double(request, monkeypatch):
    d = cudadouble.install(monkeypatch, request.param)
    yield d
    cudadouble.uninstall(d)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Clips big enough (outputs over 1 MB) for CuPy's pool to hand a freed output block to a staging slot."""
    d = tmp_path_factory.mktemp("double")
    return [media.synthetic_video(d / "a.mp4", "mpeg4", size=(320, 240), num_frames=30, dx=3, dy=-2),
            media.synthetic_video(d / "b.mp4", "h264", size=(96, 64), num_frames=26, gop=8, dx=-2, dy=1),
            media.synthetic_video(d / "c.mp4", "mpeg4", size=(352, 288), num_frames=30, dx=1, dy=2)]


def _equal(sample, want) -> bool:
    return all(np.array_equal(getattr(sample, m).get(), getattr(want, m)) for m in MODALITIES)


# -- the double is strict --------------------------------------------------------------------------------
def test_double_reports_unordered_streams_and_accepts_events(double):
    cp = double.cp
    a, b = cp.cuda.Stream(non_blocking=True), cp.cuda.Stream(non_blocking=True)
    host = np.arange(4096, dtype=np.uint8)
    with a:
        x = cp.empty(4096, cp.uint8)
    cp.cuda.runtime.memcpyAsync(x.data.ptr, host.ctypes.data, 4096, 1, a.ptr)
    with b:
        y = x.copy()  # reads x on b, no event: a race whatever order they ran in
    assert any("race" in r for r in double.drain())
    cp.cuda.runtime.memcpyAsync(x.data.ptr, host.ctypes.data, 4096, 1, a.ptr)
    b.wait_event(a.record())
    with b:
        y = x.copy()
    np.testing.assert_array_equal(y.get(b), host)
    assert double.drain() == []


def test_double_pools_reuse_like_cupy(double):
    cp = double.cp
    a, b = cp.cuda.Stream(non_blocking=True), cp.cuda.Stream(non_blocking=True)
    with a:
        x = cp.empty(5000, cp.uint8)
        ptr = x.data.ptr
        assert (x.get() == 0xA5).all()  # fresh memory is poisoned
        del x
        assert cp.empty(4000, cp.uint8).data.ptr == ptr  # freed on a, handed at once to new work on a
    with b:
        assert cp.empty(4000, cp.uint8).data.ptr != ptr  # not to another stream
    p = cp.cuda.alloc_pinned_memory(3000)
    assert len(memoryview(p)) == 4096  # CuPy's pinned pool rounds to a power of two
    addr = p.ptr
    del p
    assert cp.cuda.alloc_pinned_memory(2500).ptr == addr  # and hands a freed block out again


def test_double_checks_kernel_launches(double):
    from gpudecode._cuda import cuda_kernels
    from tests.cudadouble.core import DoubleUsageError

    cp = double.cp
    fn = cuda_kernels()._fn["batch_zero"]
    buf = cp.empty(100, cp.int32)
    ptr = np.uint64(buf.data.ptr)
    with pytest.raises(DoubleUsageError, match="np.int32"):
        fn((1,), (32,), (ptr, 100))
    with pytest.raises(DoubleUsageError, match="64-bit"):
        fn((1,), (32,), (buf.data.ptr, np.int32(100)))
    with pytest.raises(DoubleUsageError, match="takes 2 arguments"):
        fn((1,), (32,), (ptr,))
    with pytest.raises(DoubleUsageError, match="limits"):
        fn((1, 70000), (32,), (ptr, np.int32(100)))
    with pytest.raises(DoubleUsageError, match="limits"):
        fn((1,), (2048,), (ptr, np.int32(100)))
    with pytest.raises(DoubleUsageError, match="live allocation"):
        fn((1,), (32,), (np.uint64(12345), np.int32(100)))
    fn((3,), (4,), (ptr, np.int32(100)))  # 12 threads, shuffled, each walking its grid-stride loop
    assert (buf.get() == 0).all()


def test_events_belong_to_their_device(double):
    cp = double.cp
    with cp.cuda.Device(1):
        s = cp.cuda.Stream(non_blocking=True)
    with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="InvalidResourceHandle"):
        cp.cuda.Event().record(s)  # created on device 0, recorded on device 1's stream


def test_torch_streams_go_through_from_external(double):
    """CuPy 14 deprecates ExternalStream: the loader takes torch's streams through Stream.from_external."""
    from gpudecode._cuda import stream_from_torch

    s = double.cp.cuda.Stream(non_blocking=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert stream_from_torch(double.cp, s, 0) is s


def test_clean_paths_are_bit_exact_and_race_free(double, clips):
    ixs = [index_video(p, cache=False) for p in clips]
    from gpudecode._cuda import CupyExecutor
    from gpudecode.packet import CpuStage
    from gpudecode.stage import GpuStage
    from tests.test_batch import assert_batch_equals_cpu

    stage, gpu = CpuStage(), GpuStage(CupyExecutor())
    for rep, sizes in enumerate(((1, 0), (2,), (0, 1, 2))):  # slots alternate and grow
        picks = [sample_gops(ixs[i].gop_lengths, 4, mode="train", rng=rep + i) for i in sizes]
        batch = gpu([stage(ixs[i], p) for i, p in zip(sizes, picks)])
        batch.ready.synchronize()
        assert_batch_equals_cpu(batch, [ixs[i] for i in sizes], picks, to_host=lambda a: a.get())
    assert double.drain() == []


# -- the five bugs: regression tests (each fails before its fix) ----------------------------------------
def _drop_batches_before_sync(clips) -> tuple[int, list[str]]:
    """Batches dropped before any sync (what gpudecode/benchmark.py's GPU benchmark does with its samples),
    the next batch larger, so a staging slot grows into memory the dropped batch's outputs held."""
    from gpudecode._cuda import CupyExecutor
    from gpudecode.cpu import CpuBackend
    from gpudecode.packet import CpuStage
    from gpudecode.stage import GpuStage

    ixs = [index_video(p, cache=False) for p in clips]
    stage, gpu, cpu = CpuStage(), GpuStage(CupyExecutor()), CpuBackend()
    wrong = 0
    for k, i in enumerate([0, 2, 0, 2]):
        picks = sample_gops(ixs[i].gop_lengths, 8, mode="train", rng=k)
        batch = gpu([stage(ixs[i], picks)])
        if k % 2 == 0:
            del batch
            continue
        gpu.executor.host_wait(batch.ready)
        wrong += not _equal(batch.sample(0), cpu.decode(ixs[i], picks))
    return wrong, api_world_reports()


def api_world_reports() -> list[str]:
    from tests.cudadouble import api

    api.W.drain()
    return api.W.take_reports()


def test_regression_grown_slot_copy_waits_for_the_compute_stream(double, clips):
    """Bug 1 (stage.py GpuStage._slot): a grown slot's buffer from the compute stream's pool (the dropped
    sample's outputs) was written by the copy stream while that sample's kernels still ran."""
    assert _drop_batches_before_sync(clips) == (0, [])


def _two_read_samples(clips) -> bool:
    """Two one-shot reads of same-sized samples (so CuPy's pinned pool would hand the same block out)."""
    first = read_sample(clips[0], 4, mode="train", rng=1, backend="gpu", cache=False)
    read_sample(clips[0], 4, mode="train", rng=2, backend="gpu", cache=False)
    return _equal(first, read_sample(clips[0], 4, mode="train", rng=1, backend="cpu", cache=False))


def test_regression_read_sample_keeps_its_staging_buffer_until_the_copy_ran(double, clips):
    """Bug 2 (engine.read_sample): its pinned staging buffer went back to CuPy's pinned pool while its copy
    was queued; the next call packed the second clip into the same block."""
    assert _two_read_samples(clips)
    assert api_world_reports() == []


def _stage_on_device_1(clips) -> bool:
    """The GPU stage on device 1 while device 0 is current (what GpuBackend(device=1) and the benchmarks do)."""
    from gpudecode._cuda import CupyExecutor
    from gpudecode.packet import CpuStage
    from gpudecode.stage import GpuStage
    from tests.test_batch import assert_batch_equals_cpu

    ix = index_video(clips[1], cache=False)
    picks = [sample_gops(ix.gop_lengths, 4, mode="test")]
    ex = CupyExecutor(1)
    batch = GpuStage(ex)([CpuStage()(ix, picks[0])])
    assert batch.mv.data.mem.device_id == 1
    ex.host_wait(batch.ready)
    assert_batch_equals_cpu(batch, [ix], picks, to_host=ex.to_host)
    return True


def test_regression_gpu_backend_on_a_second_device(double, clips):
    """Bug 3 (_cuda.CupyExecutor.mark): events were created outside the executor's device, so any device
    but the current one failed in cudaEventRecord."""
    from gpudecode.cpu import CpuBackend
    from gpudecode.gpu import GpuBackend

    assert _stage_on_device_1(clips)
    ix = index_video(clips[1], cache=False)
    picks = sample_gops(ix.gop_lengths, 4, mode="test")
    got = GpuBackend(device=1).decode(ix, picks)
    assert double.world.device == 0 and got.mv.data.mem.device_id == 1
    assert _equal(got, CpuBackend().decode(ix, picks))
    assert api_world_reports() == []


def _caller_stream_reads_then_drops(double, clips):
    from gpudecode.cpu import CpuBackend
    from gpudecode.gpu import GpuBackend

    cp = double.cp
    ix = index_video(clips[0], cache=False)
    picks = [sample_gops(ix.gop_lengths, 4, mode="train", rng=r) for r in (1, 2)]
    backend = GpuBackend()
    caller = cp.cuda.Stream(non_blocking=True)
    with caller:
        a = backend.decode(ix, picks[0])
        kept = a.mv.copy()  # the caller's stream reads the sample...
        del a  # ...and drops it before that read ran
        backend.decode(ix, picks[1])
        got = kept.get()
    return np.array_equal(got, CpuBackend().decode(ix, picks[0]).mv), api_world_reports()


def test_regression_gpu_backend_outputs_belong_to_the_callers_stream(double, clips):
    """Bug 4 (gpu.GpuBackend): outputs came from the private compute stream's pool, so the next decode
    reused them while the caller's stream still read them."""
    assert _caller_stream_reads_then_drops(double, clips) == (True, [])


def _edited_kernel_behaviour(tmp_path, monkeypatch) -> int:
    """batch_zero's value after an edit of batch.cu, with gpudecode's kernels compiled before and after."""
    import gpudecode._cuda as _cuda
    from gpudecode.kernels import KERNEL_DIR

    src = tmp_path / "kernels"
    shutil.copytree(KERNEL_DIR, src, ignore=shutil.ignore_patterns("host", "*.py", "__pycache__"))
    monkeypatch.setattr(_cuda, "KERNEL_DIR", src)
    monkeypatch.setattr(_cuda, "NVRTC_OPTIONS", ("--std=c++14", f"-I{src}"))
    monkeypatch.setattr(_cuda, "_loaded", {})
    _cuda.cuda_kernels()
    batch = src / "batch.cu"
    text = batch.read_text()
    assert "buf[i] = 0;" in text
    batch.write_text(text.replace("buf[i] = 0;", "buf[i] = 7;"))
    monkeypatch.setattr(_cuda, "_loaded", {})  # a new process, as far as gpudecode is concerned
    import cupy as cp

    buf = cp.empty(64, cp.int32)
    _cuda.cuda_kernels()._fn["batch_zero"]((1,), (64,), (np.uint64(buf.data.ptr), np.int32(64)))
    return int(buf.get()[0])


def test_regression_an_edited_kernel_is_recompiled(double, tmp_path, monkeypatch):
    """Bug 5 (_cuda.module_source): CuPy's cache key hashes the code string, which was only #include lines,
    so an edited kernel loaded the stale compiled module."""
    assert _edited_kernel_behaviour(tmp_path, monkeypatch) == 7


# -- the double catches each bug, re-introduced here ---------------------------------------------------
@pytest.fixture
def late(monkeypatch):
    d = cudadouble.install(monkeypatch, "late")
    yield d
    cudadouble.uninstall(d)


@pytest.mark.parametrize("order", ["late", "early"])
def test_double_catches_bug_1_a_grown_slot_waiting_for_nothing(order, monkeypatch, clips):
    from gpudecode.stage import GpuStage

    cudadouble.install(monkeypatch, order)
    real = GpuStage._slot

    def slot_before_the_fix(self, nbytes):
        grows = self._slots[self._turn].nbytes < nbytes
        slot = real(self, nbytes)
        if grows:
            slot.consumed = None  # as before: the copy into the new buffer waited for nothing
        return slot

    monkeypatch.setattr(GpuStage, "_slot", slot_before_the_fix)
    wrong, reports = _drop_batches_before_sync(clips)
    assert any("race" in r and "memcpyAsync" in r and "batch_" in r for r in reports), reports
    if order == "early":  # the copy ran into memory the kernels still wrote: corrupted tables
        assert wrong > 0 and any("illegal address" in r for r in reports), reports


def test_double_catches_bug_2_a_staging_buffer_freed_with_its_copy_queued(late, monkeypatch, clips):
    import gpudecode._cuda as _cuda

    def pooled(self, nbytes):  # as before: CuPy's pinned pool, nothing held for the queued copy
        return np.frombuffer(self.cp.cuda.alloc_pinned_memory(nbytes), np.uint8, nbytes)

    monkeypatch.setattr(_cuda.CupyExecutor, "host_buffer", pooled)
    monkeypatch.setattr(_cuda, "_hold", lambda event, obj: None)
    assert not _two_read_samples(clips)
    assert any("race" in r and "pinned" in r for r in api_world_reports())


def test_double_catches_bug_3_events_outside_the_device(late, monkeypatch, clips):
    import gpudecode._cuda as _cuda

    def event_before_the_fix(self, stream):
        event = self.cp.cuda.Event(disable_timing=not self.timed)
        event.record(stream)
        return event

    monkeypatch.setattr(_cuda.CupyExecutor, "_event", event_before_the_fix)
    with pytest.raises(late.cp.cuda.runtime.CUDARuntimeError, match="cudaErrorInvalidResourceHandle"):
        _stage_on_device_1(clips)
    late.drain()


def test_double_catches_bug_4_outputs_on_the_private_stream(late, monkeypatch, clips):
    from gpudecode.gpu import GpuBackend

    def decode_before_the_fix(self, index, picks, *, modalities=MODALITIES):
        batch = self.gpu_stage([self.cpu_stage(index, picks, modalities=modalities)])
        self.cp.cuda.get_current_stream().wait_event(batch.ready)
        sample = batch.sample(0)
        sample._batch = batch
        return sample

    monkeypatch.setattr(GpuBackend, "decode", decode_before_the_fix)
    _, reports = _caller_stream_reads_then_drops(late, clips)
    assert any("race" in r and "copy kernel on stream" in r for r in reports), reports


def test_double_catches_bug_5_a_stale_module(late, tmp_path, monkeypatch):
    import gpudecode._cuda as _cuda
    from gpudecode.kernels import CUDA_SOURCES

    monkeypatch.setattr(_cuda, "module_source", lambda kernel_dir=None: "\n".join(f'#include "{n}"' for n in CUDA_SOURCES))
    assert _edited_kernel_behaviour(tmp_path, monkeypatch) == 0  # the module compiled before the edit
