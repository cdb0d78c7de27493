"""torch's half of the GPU loader's hand-over, for CPU-only torch (tests only).

torch's CUDA side (its streams, caching allocator and ``record_stream``) cannot be doubled without a
CUDA torch, so this stands in for ``teamnet.gpu_loader.TorchCuda`` and keeps everything on the CuPy
side real: the augmentation's and the training loop's streams are the double's, and each tensor the
augmentation takes is a read of the stage's outputs queued on the augmentation stream (run when
queued, since torch on the CPU computes at once); ``record_stream`` is not modelled.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from tests.cudadouble import api


class DoubleTorch:
    def __init__(self, executor, device_id=None):
        self.device = torch.device("cpu")
        self.index = executor.device
        with api.Device(self.index):
            self.stream = api.Stream(non_blocking=True)
            self.loop_stream = api.Stream(non_blocking=True)

    def context(self):
        return contextlib.nullcontext()

    def device_context(self):
        return api.Device(self.index)

    def consumer(self):
        return self.loop_stream

    def tensor(self, a, cp_stream) -> torch.Tensor:
        w = api.world()
        addr, nbytes = a.span()
        out: list = []

        def run(op):
            w.access(addr, nbytes, "r", op.clock, op.id, op.desc)
            out.append(torch.from_numpy(np.array(a._host())))

        w.force(w.enqueue(cp_stream, "kernel", f"augmentation reading {a.shape} {a.dtype}", run))
        return out[0]

    def record(self, tensors, consumer) -> None:
        pass
