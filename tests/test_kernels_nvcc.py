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


# The runtime path (the module string gpudecode/_cuda.py hands CuPy, compiled by NVRTC) is checked in
# tests/test_kernels_nvrtc.py, in a child process: importing cuda.bindings here breaks later tests.
