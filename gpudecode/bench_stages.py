"""Throughput of the batched engine's stages (used by benchmarks/gpu_path.py and benchmarks/gpu_suite.py).

- :func:`bench_cpu_stage`: the CPU stage alone on all cores (one stage per worker process, as the
  loader runs it): the ceiling of the GPU path, measurable on any machine;
- :func:`bench_gpu_path`: end to end on a GPU: workers make packets, this process runs the GPU stage
  on batches of them;
- :func:`bench_gpu_stage`: the GPU stage alone on a fixed batch (device ms per batch from CUDA
  events, bytes the kernels must move per second against the device's peak, host ms per clip).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Sequence

import numpy as np

from gpudecode.benchmark import _summarise


def _packets_worker(job: tuple[list[str], int, int, int, str, bool]):
    """Make ``clips`` packets in a worker; return their stats, or the packets themselves when asked."""
    paths, clips, segments, seed, pixels, keep = job
    from gpudecode.index import index_video
    from gpudecode.packet import CpuStage
    from gpudecode.sampling import sample_gops

    stage = CpuStage(pixels=pixels)
    indexes = [index_video(p) for p in paths]
    rng = np.random.default_rng(seed)
    packets = []
    for i in range(clips):
        ix = indexes[(seed + i) % len(indexes)]
        packet = stage(ix, sample_gops(ix.gop_lengths, segments, mode="train", rng=rng, positions=ix.p_positions))
        if keep:
            packets.append(packet)
    return packets if keep else dict(stage.stats)


def bench_cpu_stage(paths: Sequence[str], *, clips: int, segments: int, workers: int | None,
                    pixels: str = "upload") -> dict:
    """Clips/s of the CPU stage on ``workers`` processes (default: all cores), with per-stage ms per clip."""
    workers = workers or os.cpu_count() or 1
    per_worker = max(1, clips // workers)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_packets_worker, [(list(paths), 1, segments, 99, pixels, False)] * workers))  # warm-up
        t = time.perf_counter()
        results = list(pool.map(_packets_worker, [(list(paths), per_worker, segments, s, pixels, False)
                                                  for s in range(workers)]))
        wall = time.perf_counter() - t
    total: dict[str, float] = {}
    for r in results:
        for k, v in r.items():
            total[k] = total.get(k, 0.0) + v
    return {"workers": workers, "pixels": pixels, **_summarise(total, wall, segments)}


def bench_gpu_path(paths: Sequence[str], *, clips: int, segments: int, batch: int = 64, workers: int | None = None,
                   pixels: str = "upload", device: int = 0) -> dict:
    """End to end on a GPU: packets from worker processes, the GPU stage on batches of ``batch``."""
    from gpudecode._cuda import CupyExecutor
    from gpudecode.gpu import NvdecFrames
    from gpudecode.stage import GpuStage

    workers = workers or os.cpu_count() or 1
    ex = CupyExecutor(device)
    gpu = GpuStage(ex, pixels=pixels, nvdec=NvdecFrames(device, ex.compute_stream) if pixels == "nvdec" else None)
    chunk = max(1, batch // 4)
    jobs = [(list(paths), chunk, segments, s, pixels, True) for s in range(max(1, clips // chunk))]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        warm = list(pool.map(_packets_worker, [(list(paths), 1, segments, 99, pixels, True)] * workers))
        gpu([p for w in warm for p in w]).ready.synchronize()  # NVRTC compile, first allocations
        done, pending = 0, []
        t = time.perf_counter()
        last = None
        for packets in pool.map(_packets_worker, jobs):
            pending.extend(packets)
            while len(pending) >= batch:
                last = gpu(pending[:batch])
                pending, done = pending[batch:], done + batch
        if pending:
            last, done = gpu(pending), done + len(pending)
        if last is not None:
            last.ready.synchronize()
        wall = time.perf_counter() - t
    return {"workers": workers, "pixels": pixels, "batch": batch, "clips": done, "wall_s": wall,
            "clips_per_s": done / wall, "gpu": ex.device_name,
            "gpu_stage_host_ms_per_clip": {k: 1e3 * v / max(1, gpu.stats["clips"]) for k, v in gpu.stats.items()
                                           if k not in ("clips", "batches")}}


def bench_gpu_stage(paths: Sequence[str], *, batch: int = 64, segments: int = 8, repeats: int = 20,
                    device: int = 0) -> dict:
    """The GPU stage alone on one batch of ``batch`` clips: device ms (copy + kernels, and kernels alone),
    kernel bytes per second against the device's peak, host ms per clip."""
    from gpudecode._cuda import CupyExecutor
    from gpudecode.stage import GpuStage

    packets = _packets_worker((list(paths), batch, segments, 0, "upload", True))
    ex = CupyExecutor(device)
    cp = ex.cp
    gpu = GpuStage(ex)
    gpu(packets).ready.synchronize()
    props = cp.cuda.runtime.getDeviceProperties(device)
    peak = 2 * props["memoryClockRate"] * 1e3 * props["memoryBusWidth"] / 8  # bytes/s, DDR
    first = packets[0]
    h, w = first.height, first.width
    # The least the kernels must move: records and planes in, grids written and read, outputs out.
    pixels = batch * segments * h * w
    grids = sum(4 * len(p.cell_shifts) * ((h + 7) // 8) * ((w + 7) // 8) for p in packets)
    nbytes = sum(p.nbytes for p in packets) + 2 * grids + pixels * (3 + 4 + 6)
    ex.timed = True
    total, kernels, host = [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        out = gpu(packets)
        host.append(time.perf_counter() - t)
        out.ready.synchronize()
        started, copied = ex.last_copy
        total.append(cp.cuda.get_elapsed_time(started, out.ready))  # copy in + kernels
        kernels.append(cp.cuda.get_elapsed_time(copied, out.ready))  # kernels (and the wait for the copy)
        del out
    med = lambda v: float(np.median(v))  # noqa: E731
    ms, k_ms = med(total), med(kernels)
    return {"gpu": ex.device_name, "size": f"{w}x{h}", "clips": batch, "segments": segments,
            "gpu_ms_per_batch": ms, "kernel_ms_per_batch": k_ms, "kernel_bytes": nbytes,
            "kernel_GBps": nbytes / (k_ms * 1e-3) / 1e9, "peak_GBps": peak / 1e9,
            "kernel_fraction_of_peak": nbytes / (k_ms * 1e-3) / peak,
            "host_ms_per_clip": 1e3 * med(host) / batch, "upload_MB_per_batch": sum(p.nbytes for p in packets) / 1e6}


__all__ = ["bench_cpu_stage", "bench_gpu_path", "bench_gpu_stage"]
