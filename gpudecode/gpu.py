"""The GPU backend: the clip goes from compressed bytes to a device-resident Sample.

MVs always come from FFmpeg's side data on the CPU (NVDEC's own MV statistics need driver 590+
and cover H.264/HEVC only, DESIGN §4), so the CPU runs the MV pass over every P-frame it needs.
The pixels of the I-frame and of each sampled P-frame reach the GPU in one of two ways:

- ``pixels="upload"``: the YUV planes that the CPU MV pass decoded anyway are copied to the
  device (a few hundred KB per frame) and converted to RGB there;
- ``pixels="nvdec"``: NVDEC decodes those frames again on the GPU (PyNvVideoCodec, NV12 output),
  and the CPU MV pass runs with the loop filter skipped (MVs identical, ~13% cheaper).

Either way the MV lists are uploaded once per clip as FFmpeg's raw 40-byte records, and the
rasterisation, the accumulation along each P-frame chain and the gather run as the same CUDA
kernels the CPU backend runs on the host. Outputs are CuPy arrays (``torch.from_dlpack`` takes
them without a copy).
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Iterable, Literal, Sequence

import numpy as np

from gpudecode._av import yuv420_planes
from gpudecode._cuda import cuda_kernels, import_cupy
from gpudecode.cpu import motion_vectors
from gpudecode.errors import BackendUnavailableError
from gpudecode.gopreader import GopReader
from gpudecode.index import GopIndex
from gpudecode.kernels import CELL_SHIFT
from gpudecode.kernels.reference import grid_shape
from gpudecode.sample import MODALITIES, Sample, check_modalities
from gpudecode.sampling import group_picks

Pixels = Literal["upload", "nvdec"]


def _import_nvc():
    try:
        import PyNvVideoCodec as nvc  # raises RuntimeError, not ImportError, without a driver
    except Exception as e:
        raise BackendUnavailableError(None, f"PyNvVideoCodec cannot be used ({type(e).__name__}: {e})",
                                      "install gpudecode[cuda12] or gpudecode[cuda13], or use pixels='upload'") from e
    return nvc


class _NvdecFrames:
    """NVDEC decode of chosen frame indices, one decoder reused across clips."""

    def __init__(self, device: int):
        self.nvc = _import_nvc()
        self.device = device
        self._decoder = None

    def frames(self, path: str, indices: Sequence[int]) -> dict:
        nvc = self.nvc
        if self._decoder is None:
            self._decoder = nvc.SimpleDecoder(path, gpu_id=self.device, use_device_memory=True,
                                              max_width=4096, max_height=4096,
                                              output_color_type=nvc.OutputColorType.NATIVE)
        else:
            self._decoder.reconfigure_decoder(path)
        wanted = sorted(set(indices))
        return dict(zip(wanted, self._decoder.get_batch_frames_by_index(wanted)))


class GpuBackend:
    """Decode on the CPU (MVs) and NVDEC or upload (pixels); kernels on the GPU."""

    name = "gpu"

    def __init__(self, *, device: int = 0, pixels: Pixels = "upload", threads: int = 1):
        if pixels not in ("upload", "nvdec"):
            raise ValueError(f"pixels must be 'upload' or 'nvdec', got {pixels!r}")
        self.cp = import_cupy()
        self.device = device
        self.pixels = pixels
        self.threads = threads
        self.kernels = cuda_kernels(device)
        self.nvdec = _NvdecFrames(device) if pixels == "nvdec" else None
        self.device_name = self.cp.cuda.runtime.getDeviceProperties(device)["name"].decode()
        #: cumulative seconds per stage; GPU work is asynchronous, so "gpu_launch" is host time only
        self.stats: dict[str, float] = defaultdict(float)

    def _planes(self, frame):
        """(y, u_ptr, v_ptr, uv_stride, uv_step) on the device for a PyAV frame (upload) or an NVDEC frame."""
        cp = self.cp
        if self.pixels == "upload":
            y, u, v = (cp.asarray(p) for p in yuv420_planes(frame))
            return y, u, v, u.strides[0], 1
        nv12 = cp.from_dlpack(frame)  # (H * 3/2, pitch) uint8: Y rows, then interleaved UV rows
        height = nv12.shape[0] * 2 // 3
        y, uv = nv12[:height], nv12[height:]
        return y, uv.data.ptr, uv.data.ptr + 1, uv.strides[0], 2

    def decode(self, index: GopIndex, picks: Sequence[tuple[int, int]], *,
               modalities: Iterable[str] = MODALITIES) -> Sample:
        """Decode the picks ``[(gop, pos), ...]`` of one indexed video into a device-resident Sample."""
        cp = self.cp
        mods = check_modalities(modalities)
        index.check_readable()
        want_i, want_mv, want_res = (m in mods for m in MODALITIES)
        chain = want_mv or want_res
        by_gop = group_picks(picks, index.gop_lengths, path=index.path, chain=chain)

        # CPU pass: MV records of every needed P-frame (and, for upload, the pixels of the needed frames).
        mv_lists, pixel_frames = [], {}
        clock, t_start = time.perf_counter, time.perf_counter()
        t_mv = t_pixels = 0.0
        with cp.cuda.Device(self.device):
            with GopReader(index, export_mvs=chain, threads=self.threads, fast=self.pixels == "nvdec") as reader:
                for gop in sorted(by_gop):
                    at = by_gop[gop]
                    for pos, frame in reader.frames(gop, max(at) if chain else 0):
                        t0 = clock()
                        if pos > 0:
                            mv_lists.append(motion_vectors(frame))
                        t1 = clock()
                        t_mv += t1 - t0
                        if (pos == 0 and (want_i or want_res)) or (pos in at and want_res):
                            pixel_frames[(gop, pos)] = self._planes(frame) if self.pixels == "upload" else None
                        t_pixels += clock() - t1
            t0 = clock()
            if self.pixels == "nvdec":
                wanted = {index.gop_starts[g] + p: (g, p) for g, p in pixel_frames}
                decoded = self.nvdec.frames(index.path, list(wanted))
                pixel_frames = {wanted[i]: self._planes(f) for i, f in decoded.items()}
            t1 = clock()
            sample = self._run_kernels(index, picks, by_gop, mv_lists, pixel_frames, want_i, want_mv, want_res)
        stats = self.stats
        for key in ("demux", "decode", "frames"):
            stats[key] += reader.stats[key]
        stats["mv_parse"] += t_mv
        stats["upload" if self.pixels == "upload" else "nvdec"] += t_pixels + (t1 - t0)
        stats["gpu_launch"] += clock() - t1
        stats["total"] += clock() - t_start
        stats["clips"] += 1
        return sample

    def _run_kernels(self, index, picks, by_gop, mv_lists, pixel_frames, want_i, want_mv, want_res) -> Sample:
        cp, k = self.cp, self.kernels
        t, h, w = len(picks), index.height, index.width
        chain = want_mv or want_res
        offsets = np.cumsum([0] + [len(m) for m in mv_lists])
        d_mvs = cp.asarray(np.concatenate([m.view(np.uint8).reshape(-1) for m in mv_lists])) if offsets[-1] else None
        iframe = cp.empty((t, h, w, 3), cp.uint8) if want_i else None
        mv = cp.empty((t, h, w, 2), cp.int16) if want_mv else None
        residual = cp.empty((t, h, w, 3), cp.int16) if want_res else None
        scratch_mv = cp.empty((h, w, 2), cp.int16) if chain and not want_mv else None
        rgb = cp.empty((h, w, 3), cp.uint8)
        src_bufs = [cp.empty((h, w), cp.int32) for _ in range(2)]
        flag = cp.zeros(1, cp.int32)
        for shift in (CELL_SHIFT, 0):  # 0: a block off the cell grid was seen, redo with 1-pixel cells
            grid = cp.empty((*grid_shape(w, h, shift), 2), cp.int16)
            frame_no = 0
            for gop in sorted(by_gop):
                at = by_gop[gop]
                if (gop, 0) in pixel_frames:
                    y, u, v, uv_stride, uv_step = pixel_frames[(gop, 0)]
                    k.yuv420_to_rgb(y, u, v, uv_stride, uv_step, index.colour_matrix, rgb)
                src = None
                for pos in range(0, (max(at) if chain else 0) + 1):
                    if pos > 0:
                        grid.fill(0)
                        n = int(offsets[frame_no + 1] - offsets[frame_no])
                        k.rasterize_mv(None if d_mvs is None else d_mvs.data.ptr + 40 * int(offsets[frame_no]), n, grid, shift, flag)
                        frame_no += 1
                        dst = src_bufs[1] if src is src_bufs[0] else src_bufs[0]
                        k.accumulate_step(src, dst, grid, shift)
                        src = dst
                    segs = at.get(pos)
                    if not segs or not chain:
                        continue
                    out_mv = mv[segs[0]] if want_mv else scratch_mv
                    if want_res:
                        y, u, v, uv_stride, uv_step = pixel_frames[(gop, pos)]
                        k.gather_mv_residual(src, rgb, y, u, v, uv_stride, uv_step, index.colour_matrix, out_mv,
                                             residual[segs[0]])
                    else:
                        k.gather_mv_residual(src, None, None, None, None, 0, 1, index.colour_matrix, out_mv, None)
                    for seg in segs[1:]:
                        if want_mv:
                            mv[seg] = mv[segs[0]]
                        if want_res:
                            residual[seg] = residual[segs[0]]
                if want_i:
                    for segs in at.values():
                        for seg in segs:
                            iframe[seg] = rgb
            if shift == 0 or not chain or not int(flag.get()[0]):
                break
        gops = np.array([g for g, _ in picks], np.int64)
        positions = np.array([p for _, p in picks], np.int64)
        return Sample(index.path, gops, positions, iframe, mv, residual, backend=self.name)
