"""The exact module string gpudecode/_cuda.py hands CuPy compiles with NVRTC (DESIGN §4).

NVRTC needs no GPU: through ``cuda.bindings.nvrtc`` (installed with CUDA builds of torch) the
runtime-compile path of the GPU backend is checked here for every architecture the project supports,
with the same options, and every kernel the loaders look up by name must be in the PTX.
"""

from __future__ import annotations

import pytest

from gpudecode._cuda import NVRTC_OPTIONS, module_source
from gpudecode.kernels import KERNEL_NAMES

nvrtc = pytest.importorskip("cuda.bindings.nvrtc", reason="cuda-bindings (NVRTC) is not installed")


def _check(result):
    err, *rest = result
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, err
    return rest[0] if len(rest) == 1 else rest


@pytest.mark.parametrize("arch", ["75", "80", "90"])
def test_runtime_module_compiles_with_nvrtc(arch):
    prog = _check(nvrtc.nvrtcCreateProgram(module_source().encode(), b"gpudecode_kernels.cu", 0, [], []))
    try:
        options = [o.encode() for o in (*NVRTC_OPTIONS, f"--gpu-architecture=compute_{arch}")]
        err, = nvrtc.nvrtcCompileProgram(prog, len(options), options)
        log_size = _check(nvrtc.nvrtcGetProgramLogSize(prog))
        log = b" " * log_size
        _check((nvrtc.nvrtcGetProgramLog(prog, log)[0], None))
        assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, log.decode(errors="replace")
        size = _check(nvrtc.nvrtcGetPTXSize(prog))
        ptx = b" " * size
        _check((nvrtc.nvrtcGetPTX(prog, ptx)[0], None))
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    text = ptx.decode(errors="replace")
    missing = [name for name in KERNEL_NAMES if f".entry {name}(" not in text]
    assert not missing, missing
