"""bench/gpu_torch_check.sh, dry-run on the CPU: the GPU check's own code path, end to end
(two models, live stack, interleaved iterations, the report it prints)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.live

REPO = Path(__file__).resolve().parents[2]


def test_gpu_torch_check_dry_run_reports_iterations_and_overhead() -> None:
    env = {
        **os.environ,
        "DRY_RUN": "1",
        "PY": sys.executable,
        "CHECK_ARGS": "--requests 2 --tokens 8",
    }
    proc = subprocess.run(
        ["bash", "bench/gpu_torch_check.sh"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert report["device"] == "cpu"
    assert report["interleaving_invisible"] and report["instances_interleaved"]
    assert len(report["iteration_ms"]) == 2
    assert all(v["n"] > 0 and v["median"] > 0 for v in report["iteration_ms"].values())
    assert 0 <= report["arbiter_overhead"] < 1
