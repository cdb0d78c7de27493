"""PyNvVideoCodec's SimpleDecoder for the CUDA double (tests only): PyAV decodes, the frames land in the
double's device memory as NV12 (pitch-aligned rows, like NVDEC's surfaces), written by an operation on the
decoder's stream, in buffers the decoder reuses for the next call (as NVDEC's pool of surfaces is)."""

from __future__ import annotations

import enum
import types

import av
import numpy as np

from tests.cudadouble import api

_PITCH = 256


class OutputColorType(enum.Enum):
    NATIVE = 0
    RGB = 1
    RGBP = 2


class _Frame:
    def __init__(self, array):
        self._double_array = array


class SimpleDecoder:
    def __init__(self, path, *, gpu_id: int = 0, use_device_memory: bool = True, cuda_stream: int = 0,
                 max_width: int = 0, max_height: int = 0, output_color_type=OutputColorType.NATIVE, **kw):
        if not use_device_memory or output_color_type is not OutputColorType.NATIVE:
            raise NotImplementedError("the NVDEC double decodes to NV12 in device memory only")
        self.gpu_id, self.stream_ptr = gpu_id, int(cuda_stream)
        self.max_width, self.max_height = max_width, max_height
        self._surfaces: list = []
        self.reconfigure_decoder(path)

    def reconfigure_decoder(self, path) -> None:
        self.path = str(path)

    def _decode(self, wanted: set) -> dict:
        out = {}
        with av.open(self.path) as container:
            stream = container.streams.video[0]
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted:
                    out[i] = frame.to_ndarray(format="nv12")
                if len(out) == len(wanted):
                    break
        missing = wanted - set(out)
        if missing:
            raise RuntimeError(f"{self.path}: no frames {sorted(missing)}")
        return out

    def get_batch_frames_by_index(self, indices) -> list:
        w = api.world()
        host = self._decode(set(indices))
        frames = []
        with api.Device(self.gpu_id):
            stream = api.external(self.stream_ptr)
            for k, i in enumerate(indices):
                nv12 = host[i]
                h, width = nv12.shape
                if width > self.max_width or h * 2 // 3 > self.max_height:
                    raise RuntimeError(f"{self.path}: {width}x{h * 2 // 3} is over max_width/max_height")
                pitch = -(-width // _PITCH) * _PITCH
                if k >= len(self._surfaces) or self._surfaces[k].shape != (h, pitch):
                    with stream:
                        surface = api.empty((h, pitch), np.uint8)
                    if k < len(self._surfaces):
                        self._surfaces[k] = surface
                    else:
                        self._surfaces.append(surface)
                surface = self._surfaces[k]
                padded = np.zeros((h, pitch), np.uint8)
                padded[:, :width] = nv12
                w.copy(stream, surface.data.ptr, padded.ctypes.data, padded.nbytes, f"NVDEC decode of frame {i}")
                frames.append(_Frame(surface[:, :width]))
        return frames


def make_module() -> types.ModuleType:
    m = types.ModuleType("PyNvVideoCodec")
    m.__cuda_double__ = True
    m.SimpleDecoder = SimpleDecoder
    m.OutputColorType = OutputColorType
    return m
