"""Every .cu source compiles with nvcc for the architectures the project supports.

Nothing built here runs here (no GPU in CI); this pins that the single source stays valid CUDA.
sm_70 (V100) needs the CUDA 12 toolkit: CUDA 13 dropped Volta.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from gpudecode.kernels import CUDA_SOURCES, KERNEL_DIR

NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not on the PATH")


def nvcc_major() -> int:
    out = subprocess.run([NVCC, "--version"], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"release (\d+)\.", out).group(1))


def architectures() -> list[str]:
    archs = ["75", "80", "90"]
    return (["70"] if nvcc_major() < 13 else []) + archs


@pytest.mark.parametrize("source", CUDA_SOURCES)
def test_cu_compiles_with_nvcc(source, tmp_path):
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in architectures()]
    cmd = [NVCC, "-c", "-Werror=all-warnings", *gencode, str(KERNEL_DIR / source), "-o", str(tmp_path / "k.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"
    # The kernels the loaders look up by name are exported unmangled (nvcc's host launch stubs).
    nm = shutil.which("nm")
    if nm:
        symbols = subprocess.run([nm, str(tmp_path / "k.o")], capture_output=True, text=True).stdout
        exported = set(re.findall(r" T (\w+)$", symbols, re.M))
        declared = set(re.findall(r'extern "C" __global__ void (\w+)', (KERNEL_DIR / source).read_text()))
        assert declared and declared <= exported, (declared, exported)


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except Exception:  # not installed, or a CUDA install that cannot load here
        return None
    return nvrtc


@pytest.mark.skipif(_nvrtc() is None, reason="cuda-bindings (NVRTC) is not installed")
@pytest.mark.parametrize("arch", ["75", "90"])
def test_module_compiles_with_nvrtc(arch):
    """The exact runtime path: the module string gpudecode/_cuda.py hands CuPy, compiled by NVRTC
    (no GPU needed), exports every kernel. nvcc alone misses what only NVRTC rejects (no system
    headers, no host compiler)."""
    from gpudecode.kernels import KERNEL_NAMES

    nvrtc = _nvrtc()
    code = "\n".join(f'#include "{name}"' for name in CUDA_SOURCES)  # as in gpudecode/_cuda.py
    options = [b"--std=c++14", f"-I{KERNEL_DIR}".encode(), f"--gpu-architecture=compute_{arch}".encode()]
    err, prog = nvrtc.nvrtcCreateProgram(code.encode(), b"gpudecode.cu", 0, [], [])
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, err
    try:
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(options), options)
        _, size = nvrtc.nvrtcGetProgramLogSize(prog)
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(prog, log)
        assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, log.decode(errors="replace")
        _, size = nvrtc.nvrtcGetPTXSize(prog)
        ptx = b" " * size
        nvrtc.nvrtcGetPTX(prog, ptx)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    entries = set(re.findall(r"\.entry (\w+)", ptx.decode(errors="replace")))
    assert set(KERNEL_NAMES) <= entries, entries
