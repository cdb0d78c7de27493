#!/usr/bin/env bash
# One command on a GPU machine (see benchmarks/device_check.py): preflight, carried wheels, the project, the cuda
# tests, gpu_suite --quick, a 30-step AMP channels-last training with data.engine=gpu, model_speed.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m benchmarks.device_check "$@"
