"""`--help` answers without importing torch, torchvision, PyAV or DALI (issue 19: `teamnet.train --help`
took 4.9 s to appear because it imported everything before parsing)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "av", "nvidia.dali", "cupy", "PyNvVideoCodec")
TEAMNET_HEAVY = HEAVY[:2] + HEAVY[3:]  # gpudecode's CLI imports PyAV at start-up (0.3 s), nothing heavier


def imported_modules(*command: str) -> tuple[str, set[str]]:
    """Run ``python -X importtime COMMAND``: its stdout and the top-level names of every module it imported."""
    done = subprocess.run([sys.executable, "-X", "importtime", *command], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    names = set()
    for line in done.stderr.splitlines():  # "import time: self [us] | cumulative | imported package"
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            names.add(name)
            names.add(name.split(".")[0])
    return done.stdout, names


@pytest.mark.parametrize("command,heavy", [
    (("-m", "teamnet.train", "--help"), TEAMNET_HEAVY),
    (("-m", "teamnet.predict", "--help"), TEAMNET_HEAVY),
    (("-c", "import sys; from teamnet.commands import train_main; sys.exit(train_main(['--help']))"), TEAMNET_HEAVY),
    (("-c", "import sys; from teamnet.commands import predict_main; sys.exit(predict_main(['--help']))"),
     TEAMNET_HEAVY),
    (("-m", "gpudecode.cli", "--help"), ("torch", "torchvision", "nvidia.dali", "cupy", "PyNvVideoCodec")),
])
def test_help_imports_nothing_heavy(command, heavy):
    out, names = imported_modules(*command)
    assert out.startswith("usage: ") and "--help" in out
    assert names, "no -X importtime output: the check would pass vacuously"
    assert not names & set(heavy), sorted(names & set(heavy))


def test_import_teamnet_is_lazy_but_complete():
    out, names = imported_modules("-c", "import sys, teamnet; print('torch' in sys.modules)")
    assert out.strip() == "False" and "torch" not in names
    import teamnet

    for name in teamnet.__all__:  # every public name still resolves (imported on first use)
        getattr(teamnet, name)
    assert teamnet.build_model is teamnet.models.build_model
