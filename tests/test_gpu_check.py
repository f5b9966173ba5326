"""The GPU check script's CPU smoke mode: the same code path as on an H200 (FSDP2 through
Accelerate under torchrun, memgym's GRPO step beside the plain transformers step), on a tiny
model, so the script cannot rot between GPU sessions."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_cpu():
    env = {**os.environ, "GPU_CHECK_NO_WHEELS": "1", "PYTHON": sys.executable,
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "experiments/device/gpu_check.sh", "--device", "cpu",
                           "--tiny", "--batch", "4", "--seq", "64", "--prompt-len", "16",
                           "--steps", "2"], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for what in ("tokens/s", "peak"):
        assert what in done.stdout, done.stdout[-3000:]
