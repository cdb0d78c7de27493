"""A strict asynchronous CUDA double: CuPy (and PyNvVideoCodec) for CI, where no GPU exists (tests only).

``install(monkeypatch, order)`` puts the double in ``sys.modules`` as ``cupy`` and ``PyNvVideoCodec``
and empties gpudecode's kernel cache, so every ``import cupy`` of the project gets it; see
``core.py`` for how strict it is and ``api.py`` for the names it provides. Not part of the package:
it lives in tests/ and is never installed.
"""

from __future__ import annotations

import sys

from tests.cudadouble import api, core, nvc

ORDERS = ("late", "early", "random:1")


class CudaDouble:
    def __init__(self, order: str):
        self.world = core.World(order)
        self.cp = api.make_cupy()
        self.nvc = nvc.make_module()

    @property
    def order(self) -> str:
        return self.world.order

    def drain(self) -> list[str]:
        """Run everything still queued; the reports (races, illegal addresses) so far, then forget them."""
        self.world.drain()
        return self.world.take_reports()


def install(monkeypatch, order: str = "late") -> CudaDouble:
    import gpudecode._cuda as _cuda

    double = CudaDouble(order)
    api.W = double.world
    monkeypatch.setitem(sys.modules, "cupy", double.cp)
    monkeypatch.setitem(sys.modules, "cupy.cuda", double.cp.cuda)
    monkeypatch.setitem(sys.modules, "cupy.cuda.runtime", double.cp.cuda.runtime)
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", double.nvc)
    monkeypatch.setattr(_cuda, "_loaded", {})
    monkeypatch.setattr(_cuda, "_in_flight", [])
    import teamnet.gpu_loader as gpu_loader
    from tests.cudadouble.torch_side import DoubleTorch

    monkeypatch.setattr(gpu_loader, "_torch_side", DoubleTorch)
    return double


def uninstall(double: CudaDouble) -> None:
    if api.W is double.world:
        api.W = None
