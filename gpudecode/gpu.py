"""The GPU backend: one clip through the batched engine, as a batch of one.

The engine has two stages with one typed hand-off (``gpudecode.packet.ClipPacket``):

- the CPU stage (``gpudecode.packet.CpuStage``), meant for the loader's worker processes: decode
  exactly the frames the picks need, with FFmpeg's MV export (NVDEC's own MV statistics need
  driver 590+ and cover H.264/HEVC only, DESIGN §4), and nothing per pixel;
- the GPU stage (``gpudecode.stage.GpuStage``), in the process that owns the GPU: a whole batch in
  one copy and at most four kernel launches on its own stream.

The pixels of the I-frames and sampled P-frames reach the GPU in one of two ways:

- ``pixels="upload"``: the YUV planes the CPU decoded anyway travel in the packet;
- ``pixels="nvdec"``: NVDEC decodes those frames again on the GPU (PyNvVideoCodec, NV12, one
  decoder reused across clips and batches), and the CPU pass skips the loop filter (MVs identical,
  ~13% cheaper) and ships no pixels.

Outputs are CuPy arrays (``torch.from_dlpack`` takes them without a copy), allocated from the pool of
the stream current at the call, which waits for the batch's kernels on the device, never on the host:
dropping a sample while that stream still reads it is then safe (the pool reuses the memory in that
stream's order).
"""

from __future__ import annotations

from typing import Any, Iterable, Literal, Sequence

from gpudecode.errors import GPU_INSTALL_REMEDY, BackendUnavailableError
from gpudecode.index import GopIndex
from gpudecode.packet import CpuStage
from gpudecode.sample import MODALITIES, Sample
from gpudecode.stage import GpuStage

Pixels = Literal["upload", "nvdec"]


def _import_nvc():
    try:
        import PyNvVideoCodec as nvc  # raises RuntimeError, not ImportError, without a driver
    except Exception as e:
        raise BackendUnavailableError(None, f"PyNvVideoCodec cannot be used ({type(e).__name__}: {e})",
                                      f"{GPU_INSTALL_REMEDY}; or use pixels='upload'") from e
    return nvc


class NvdecFrames:
    """NVDEC decode of chosen frame indices into NV12 device frames; one decoder reused across clips.

    Decodes on the GPU stage's compute stream, so the copies and kernels that read the frames are
    ordered after the decode without a host wait. Not executed here (no GPU in CI): the host tests
    run the same NV12 addressing with frames decoded by PyAV.
    """

    def __init__(self, device: int, stream: Any = None):
        self.nvc = _import_nvc()
        self.device = device
        self.stream = stream
        self._decoder = None

    def nv12(self, path: str, indices: Sequence[int]) -> list[tuple[int, int, int, int, Any]]:
        import cupy as cp  # the GPU stage already imported it through gpudecode._cuda

        nvc = self.nvc
        if self._decoder is None:
            self._decoder = nvc.SimpleDecoder(path, gpu_id=self.device, use_device_memory=True,
                                              cuda_stream=0 if self.stream is None else self.stream.ptr,
                                              max_width=4096, max_height=4096,
                                              output_color_type=nvc.OutputColorType.NATIVE)
        else:
            self._decoder.reconfigure_decoder(path)
        wanted = sorted(set(indices))
        decoded = dict(zip(wanted, self._decoder.get_batch_frames_by_index(wanted)))
        out = []
        for i in indices:
            frame = decoded[i]
            # (H * 3/2, pitch) uint8: Y rows, then interleaved UV rows. Copied (on the decoder's stream,
            # so ordered after the decode) because the decoder may reuse its buffers for the next clip.
            with cp.cuda.Device(self.device), (self.stream if self.stream is not None else cp.cuda.Stream.null):
                nv12 = cp.from_dlpack(frame).copy()
            height = nv12.shape[0] * 2 // 3
            pitch = int(nv12.strides[0])
            out.append((int(nv12.data.ptr), pitch, int(nv12.data.ptr) + height * pitch, pitch, nv12))
        return out


class GpuBackend:
    """``decode(index, picks) -> Sample`` through the CPU stage and the GPU stage (a batch of one).

    ``executor`` defaults to CuPy on ``device``; ``gpudecode.executor.HostExecutor()`` runs the
    same stage on the host build of the kernels (what CI uses to execute this path).
    """

    name = "gpu"

    def __init__(self, *, device: int = 0, pixels: Pixels = "upload", threads: int = 1, executor=None):
        if pixels not in ("upload", "nvdec"):
            raise ValueError(f"pixels must be 'upload' or 'nvdec', got {pixels!r}")
        self.device = device
        self.pixels = pixels
        self.threads = threads
        if executor is None:
            from gpudecode._cuda import CupyExecutor  # noqa: PLC0415 (imports CuPy)

            executor = CupyExecutor(device)
        self.executor = executor
        self.cp = getattr(executor, "cp", None)  # CuPy, on a device (callers synchronise through it)
        self.device_name = getattr(executor, "device_name", f"{executor.name} executor")
        nvdec = None
        if pixels == "nvdec":
            nvdec = NvdecFrames(device, getattr(executor, "compute_stream", None))
        self.cpu_stage = CpuStage(pixels=pixels, threads=threads)
        self.gpu_stage = GpuStage(executor, pixels=pixels, nvdec=nvdec, backend=self.name)

    @property
    def stats(self) -> dict[str, float]:
        """Cumulative seconds per stage: the CPU stage's (demux, decode, mv_parse, copy) and the GPU
        stage's host time (pack, nvdec, launch; GPU work is asynchronous)."""
        out = {k: v for k, v in self.cpu_stage.stats.items() if k != "total"}
        for k in ("pack", "nvdec", "launch"):
            out[k] = self.gpu_stage.stats.get(k, 0.0)
        out["total"] = self.cpu_stage.stats.get("total", 0.0) + sum(self.gpu_stage.stats.get(k, 0.0) for k in ("pack", "nvdec", "launch"))
        return out

    def decode(self, index: GopIndex, picks: Sequence[tuple[int, int]], *,
               modalities: Iterable[str] = MODALITIES) -> Sample:
        """Decode the picks ``[(gop, pos), ...]`` of one indexed video into a device-resident Sample."""
        packet = self.cpu_stage(index, picks, modalities=modalities)
        if self.cp is None:  # the host executor: everything has happened when the call returns
            batch = self.gpu_stage([packet])
        else:
            with self.cp.cuda.Device(self.device):
                consumer = self.cp.cuda.get_current_stream()
                # Outputs owned by the caller's stream (issue 18: from the private compute stream's pool,
                # the next decode could reuse them while the caller's stream still read them).
                batch = self.gpu_stage([packet], consumer=consumer)
                consumer.wait_event(batch.ready)  # the caller's stream waits for the kernels on the device
        sample = batch.sample(0)
        sample._batch = batch  # keeps NVDEC frames alive as long as the views  # type: ignore[attr-defined]
        return sample
