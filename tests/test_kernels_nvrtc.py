"""The exact module string gpudecode/_cuda.py hands CuPy compiles with NVRTC (DESIGN §4).

NVRTC needs no GPU: through ``cuda.bindings.nvrtc`` (installed with CUDA builds of torch) the
runtime-compile path of the GPU backend is checked here for every architecture the project supports,
with the same options, and every kernel the loaders look up by name must be in the PTX.

The compile runs in a child process: importing cuda.bindings into the test process broke later,
unrelated tests (torch.load with weights_only, F.interpolate) in the same session.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gpudecode._cuda import NVRTC_OPTIONS, module_source
from gpudecode.kernels import KERNEL_NAMES

_COMPILE = r"""
import json, sys
try:
    from cuda.bindings import nvrtc
except Exception as e:
    print(json.dumps({"skip": f"cuda-bindings (NVRTC) cannot be imported: {e}"}))
    sys.exit(0)
job = json.loads(sys.stdin.read())
ok = nvrtc.nvrtcResult.NVRTC_SUCCESS
err, prog = nvrtc.nvrtcCreateProgram(job["source"].encode(), b"gpudecode_kernels.cu", 0, [], [])
assert err == ok, err
options = [o.encode() for o in job["options"]]
err, = nvrtc.nvrtcCompileProgram(prog, len(options), options)
_, size = nvrtc.nvrtcGetProgramLogSize(prog)
log = b" " * size
nvrtc.nvrtcGetProgramLog(prog, log)
ptx = ""
if err == ok:
    _, size = nvrtc.nvrtcGetPTXSize(prog)
    buf = b" " * size
    nvrtc.nvrtcGetPTX(prog, buf)
    ptx = buf.decode(errors="replace")
nvrtc.nvrtcDestroyProgram(prog)
print(json.dumps({"ok": err == ok, "log": log.decode(errors="replace"), "ptx": ptx}))
"""


@pytest.mark.parametrize("arch", ["75", "80", "90"])
def test_runtime_module_compiles_with_nvrtc(arch):
    job = {"source": module_source(), "options": [*NVRTC_OPTIONS, f"--gpu-architecture=compute_{arch}"]}
    proc = subprocess.run([sys.executable, "-c", _COMPILE], input=json.dumps(job), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    assert result["ok"], result["log"]
    missing = [name for name in KERNEL_NAMES if f".entry {name}(" not in result["ptx"]]
    assert not missing, missing
