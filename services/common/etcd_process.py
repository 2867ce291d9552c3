"""Start and stop a local etcd (Debian `etcd-server`) on loopback with a private data dir.

Used by `slinfer up`, `make demo` and the test fixtures. Nothing here talks to a
system-wide etcd: every process gets its own ports and data directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class EtcdNotInstalled(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def etcd_binary() -> str:
    found = shutil.which("etcd") or next(
        (p for p in ("/usr/bin/etcd", "/usr/local/bin/etcd") if os.access(p, os.X_OK)), None
    )
    if not found:
        raise EtcdNotInstalled(
            "etcd is not installed: run `make etcd` (or `sudo apt-get install etcd-server`)"
        )
    return found


@dataclass
class EtcdProcess:
    client_port: int
    data_dir: Path
    proc: subprocess.Popen[bytes]
    owns_data_dir: bool

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def start_etcd(
    *,
    client_port: int | None = None,
    data_dir: Path | None = None,
    log_path: Path | None = None,
    timeout_s: float = 20.0,
) -> EtcdProcess:
    """Start etcd on 127.0.0.1 and wait until it answers /health."""
    binary = etcd_binary()
    client_port = client_port or free_port()
    peer_port = free_port()
    owns = data_dir is None
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="slinfer-etcd-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    client_url = f"http://127.0.0.1:{client_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    args = [
        binary,
        "--name", "slinfer",
        "--data-dir", str(data_dir),
        "--listen-client-urls", client_url,
        "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url,
        "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"slinfer={peer_url}",
        "--log-level", "warn",
        "--logger", "zap",
    ]  # fmt: skip
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"etcd exited with code {proc.returncode} at start; see {log_path or 'its log'}"
            )
        try:
            with urllib.request.urlopen(f"{client_url}/health", timeout=1) as resp:
                if b'"health":"true"' in resp.read():
                    return EtcdProcess(client_port, data_dir, proc, owns)
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"etcd did not become healthy within {timeout_s:.0f} s")
