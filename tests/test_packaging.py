"""Repository checks: generated protobuf code is fresh, docker-compose.yml is valid."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_generated_protos_are_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_protos.py"), "--out", str(tmp_path)],
        check=True,
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    assert generated, "protoc generated nothing"
    for rel in generated:
        committed = REPO / rel
        assert committed.exists(), f"{rel} is not committed: run `make protos`"
        assert committed.read_text() == (tmp_path / rel).read_text(), (
            f"{rel} is stale: run `make protos` and commit the result"
        )


def test_docker_compose_config_is_valid() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: run `make system-deps`")
    res = subprocess.run(
        [binary, "-f", str(REPO / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert res.returncode == 0, res.stderr
    for service in ("etcd", "scheduler", "memory", "consolidator", "cpu-worker"):
        assert f"  {service}:" in res.stdout
    assert "quay.io/coreos/etcd:v3.5.17" in res.stdout, "etcd image must be pinned"
    assert res.stdout.count("healthcheck:") >= 5


def test_wheel_installs_one_import_root(tmp_path: Path) -> None:
    """Everything the wheel installs lives under `slinfer` (services/ and sim/ mapped in by
    setup.py's package_dir); bench/, tests/ and scripts/ are not installed."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         str(REPO), "-w", str(tmp_path)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("slinfer-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    roots = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert roots == {"slinfer"}
    for module in ("slinfer/services/scheduler/server.py", "slinfer/sim/driver.py",
                   "slinfer/policy/admission.py", "slinfer/v1/gateway_pb2.py"):  # fmt: skip
        assert module in names, f"{module} missing from the wheel"
