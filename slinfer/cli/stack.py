"""`slinfer up` / `down`: etcd and every service as local processes, on loopback.

State of a detached stack (pids, ports, log files) lives in $SLINFER_HOME/run/stack.json so
`slinfer down` can stop it from another shell.

Authentication is on unless `insecure`: the stack gets a fresh cluster token (the services'
credential between themselves, $SLINFER_HOME/run/cluster.token) and an admin API key, which
the CLI and the SDK read from $SLINFER_HOME/api_key (docs/RELIABILITY.md, "Tenants and keys").
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from slinfer.services.common.etcd_process import start_etcd


def home() -> Path:
    return Path(os.environ.get("SLINFER_HOME", Path.home() / ".cache" / "slinfer"))


def state_file(run_dir: Path | None = None) -> Path:
    return (run_dir or home() / "run") / "stack.json"


def key_file() -> Path:
    """Where `slinfer up` leaves its admin key for the CLI and the SDK."""
    return home() / "api_key"


@dataclass
class StackConfig:
    etcd_port: int = 23790
    gateway_port: int = 50051
    memory_port: int = 50052
    consolidator_port: int = 50053
    worker_port: int = 50061
    http_port: int = 8000  # the OpenAI-compatible HTTP API (services/http); 0 = none
    metrics_base: int = 9500  # scheduler +1, memory +2, consolidator +3, worker +11
    worker_memory: str = "8GiB"
    worker_threads: int | None = None
    # dtype of the CPU workers' engines (auto, fp32, bf16); None: the workers read
    # $SLINFER_CPU_DTYPE, which they inherit
    worker_cpu_dtype: str | None = None
    cpu_nodes: int = 1  # >1: that many CPU workers, each pinned to one core
    keep_alive_s: float = 300.0
    log_dir: Path = field(default_factory=lambda: home() / "logs")
    # Extra flags for the scheduler (e.g. ["--system", "sllm+c"]) and the consolidator, and
    # where the stack keeps its etcd data and state file: $SLINFER_HOME/run by default (what
    # `slinfer down` reads); benchmarks pass a private directory so they never touch a user's.
    scheduler_args: tuple[str, ...] = ()
    consolidator_args: tuple[str, ...] = ()
    run_dir: Path | None = None
    schedulers: int = 1  # gateway replicas: gateway_port, then gateway_port + 4, + 5, ...
    insecure: bool = False  # no authentication (everything listens on loopback anyway)
    tls_cert: str = ""  # serve TLS (every service) with this certificate and key
    tls_key: str = ""
    tls_ca: str = ""  # the CA the services (and the health checks) trust

    def gateway_ports(self) -> list[int]:
        return [self.gateway_port] + [self.gateway_port + 3 + i for i in range(1, self.schedulers)]


@dataclass
class Stack:
    etcd_pid: int
    etcd_data_dir: str
    etcd_endpoint: str
    gateway: str
    pids: dict[str, int]
    logs: dict[str, str]
    http: str = ""  # host:port of the HTTP API ("" when not started)
    gateways: list[str] = field(default_factory=list)  # every replica, gateway first
    api_key: str = ""  # the admin key ("" when insecure)
    key_file: str = ""  # where it was written for the CLI ("" : nowhere)


def _wait_healthy(
    address: str,
    service: str,
    proc: subprocess.Popen[bytes],
    log: Path,
    timeout_s: float = 120.0,
    tls_ca: str = "",
) -> None:
    deadline = time.monotonic() + timeout_s
    channel = (
        grpc.secure_channel(address, grpc.ssl_channel_credentials(Path(tls_ca).read_bytes()))
        if tls_ca
        else grpc.insecure_channel(address)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"{service} exited with code {proc.returncode}:\n{tail}")
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"{service} at {address} not healthy within {timeout_s:.0f} s; see {log}")


def _wait_ready_http(
    address: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 60.0
) -> None:
    """Until the HTTP front's /ready answers 200 (etcd and the gateway answer it)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"http exited with code {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"http://{address}/ready", timeout=3.0) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"http at {address} not ready within {timeout_s:.0f} s; see {log}")


def service_commands(cfg: StackConfig) -> dict[str, tuple[list[str], str]]:
    """Each service of the stack: its `python -m` arguments (before the security flags) and
    its address."""
    b = cfg.metrics_base
    services: dict[str, tuple[list[str], str]] = {}
    for i, port in enumerate(cfg.gateway_ports()):
        services["scheduler" if i == 0 else f"scheduler-{i}"] = (
            [
                "slinfer.services.scheduler",
                "--listen",
                f"127.0.0.1:{port}",
                "--metrics-port",
                str(b + 1 if i == 0 else b + 4 + i),
                "--keep-alive",
                str(cfg.keep_alive_s),
                *cfg.scheduler_args,
            ],
            f"127.0.0.1:{port}",
        )
    services.update({
        "memory": (
            [
                "slinfer.services.memory",
                "--listen",
                f"127.0.0.1:{cfg.memory_port}",
                "--metrics-port",
                str(b + 2),
            ],
            f"127.0.0.1:{cfg.memory_port}",
        ),
        "consolidator": (
            [
                "slinfer.services.consolidator",
                "--listen",
                f"127.0.0.1:{cfg.consolidator_port}",
                "--metrics-port",
                str(b + 3),
                *cfg.consolidator_args,
            ],
            f"127.0.0.1:{cfg.consolidator_port}",
        ),
    })  # fmt: skip
    ncpu = len(os.sched_getaffinity(0))
    for i in range(cfg.cpu_nodes):
        args = [
            "slinfer.services.worker", "--listen", f"127.0.0.1:{cfg.worker_port + i}",
            "--metrics-port", str(b + 11 + i), "--node-id", f"cpu-{i}", "--kind", "cpu",
            "--memory", cfg.worker_memory,
        ]  # fmt: skip
        if cfg.cpu_nodes > 1:  # one core each, so the nodes do not share cores
            args += ["--cpus", str(sorted(os.sched_getaffinity(0))[i % ncpu])]
        elif cfg.worker_threads:
            args += ["--threads", str(cfg.worker_threads)]
        if cfg.worker_cpu_dtype:
            args += ["--cpu-dtype", cfg.worker_cpu_dtype]
        name = "worker" if i == 0 else f"worker-{i}"
        services[name] = (args, f"127.0.0.1:{cfg.worker_port + i}")
    return services


def _spawn(name: str, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        env=env,
        stdout=open(log, "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def restart_service(stack: Stack, cfg: StackConfig, name: str) -> int:
    """Start service `name` of a running stack again (after it died: chaos tests, a
    supervisor); returns its new pid once it is healthy."""
    run_dir = cfg.run_dir or home() / "run"
    args, addr = service_commands(cfg)[name]
    env = {**os.environ, "SLINFER_ETCD": stack.etcd_endpoint}
    token_file = run_dir / "cluster.token"
    flags = ["--insecure"] if cfg.insecure else _tls_flags(cfg)
    if not cfg.insecure:
        env["SLINFER_CLUSTER_TOKEN"] = token_file.read_text().strip()
    log = Path(stack.logs[name])
    proc = _spawn(name, [*args, *flags], env, log)
    _wait_healthy(addr, name, proc, log, tls_ca=cfg.tls_ca)
    stack.pids[name] = proc.pid
    return proc.pid


def start_stack(cfg: StackConfig, echo: object = print) -> Stack:
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    run_dir = cfg.run_dir or home() / "run"
    data_dir = run_dir / "etcd-data"
    etcd = start_etcd(
        client_port=cfg.etcd_port, data_dir=data_dir, log_path=cfg.log_dir / "etcd.log"
    )
    echo(f"etcd        {etcd.endpoint} (data {data_dir})")  # type: ignore[operator]
    services = service_commands(cfg)
    env = {**os.environ, "SLINFER_ETCD": etcd.endpoint}
    flags = _security_flags(cfg, run_dir, env)
    api_key = "" if cfg.insecure else _admin_key(etcd.endpoint)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, str] = {"etcd": str(cfg.log_dir / "etcd.log")}
    try:
        for name, (args, _addr) in services.items():
            args = [*args, *flags]
            log = cfg.log_dir / f"{name}.log"
            logs[name] = str(log)
            procs[name] = _spawn(name, args, env, log)
        for name, (_args, addr) in services.items():
            _wait_healthy(addr, name, procs[name], Path(logs[name]), tls_ca=cfg.tls_ca)
            echo(f"{name:<11} {addr} (log {logs[name]})")  # type: ignore[operator]
        if cfg.http_port:
            http_addr = f"127.0.0.1:{cfg.http_port}"
            gateway = services["scheduler"][1]
            args = ["slinfer.services.http", "--listen", http_addr, "--gateway", gateway]
            if cfg.tls_ca:
                args += ["--tls-ca", cfg.tls_ca]
            logs["http"] = str(cfg.log_dir / "http.log")
            procs["http"] = subprocess.Popen(
                [sys.executable, "-m", *args],
                env=env,
                stdout=open(logs["http"], "ab"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            _wait_ready_http(http_addr, procs["http"], Path(logs["http"]))
            echo(f"{'http':<11} http://{http_addr}/v1 (log {logs['http']})")  # type: ignore[operator]
    except BaseException:
        for p in procs.values():
            p.terminate()
        etcd.stop()
        raise
    written = ""
    if api_key and cfg.run_dir is None:  # the user's stack: the CLI and the SDK find the key
        key_file().parent.mkdir(parents=True, exist_ok=True)
        key_file().write_text(api_key + "\n")
        key_file().chmod(0o600)
        written = str(key_file())
    stack = Stack(
        etcd_pid=etcd.proc.pid,
        etcd_data_dir=str(data_dir),
        etcd_endpoint=etcd.endpoint,
        gateway=services["scheduler"][1],
        pids={n: p.pid for n, p in procs.items()},
        logs=logs,
        http=f"127.0.0.1:{cfg.http_port}" if cfg.http_port else "",
        gateways=[addr for n, (_a, addr) in services.items() if n.startswith("scheduler")],
        api_key=api_key,
        key_file=written,
    )
    state_file(run_dir).parent.mkdir(parents=True, exist_ok=True)
    state_file(run_dir).write_text(json.dumps(asdict(stack), indent=2))
    return stack


def _security_flags(cfg: StackConfig, run_dir: Path, env: dict[str, str]) -> list[str]:
    """The flags (and, in `env`, the cluster token) every service of the stack starts with."""
    if cfg.insecure:
        return ["--insecure"]
    token_file = run_dir / "cluster.token"
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    env["SLINFER_CLUSTER_TOKEN"] = token
    return _tls_flags(cfg)


def _tls_flags(cfg: StackConfig) -> list[str]:
    flags = []
    for flag, value in (
        ("--tls-cert", cfg.tls_cert), ("--tls-key", cfg.tls_key), ("--tls-ca", cfg.tls_ca)
    ):
        if value:
            flags += [flag, value]
    return flags


def _admin_key(etcd_endpoint: str) -> str:
    """An admin key of tenant `default`, stored (hashed) in the stack's etcd."""
    from slinfer.services.common.auth import Role, create_key
    from slinfer.services.common.store import Store

    async def make() -> str:
        store = Store(etcd_endpoint)
        await store.connect()
        try:
            key, _ = await create_key(store, "default", Role.ADMIN, "slinfer up")
            return key
        finally:
            await store.close()

    return asyncio.run(make())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _terminate(pid: int, timeout_s: float = 15.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def stop_stack(stack: Stack | None = None, run_dir: Path | None = None) -> bool:
    """Stop the services (worker first), then etcd; remove its data. False if none ran."""
    if stack is None:
        if not state_file(run_dir).exists():
            return False
        stack = Stack(**json.loads(state_file(run_dir).read_text()))
    workers = [n for n in stack.pids if n.startswith("worker")]
    schedulers = [n for n in stack.pids if n.startswith("scheduler")]
    for name in ["http", *workers, *schedulers, "consolidator", "memory"]:
        if name in stack.pids:
            _terminate(stack.pids[name])
    _terminate(stack.etcd_pid)
    if stack.key_file:
        Path(stack.key_file).unlink(missing_ok=True)
    (Path(stack.etcd_data_dir).parent / "cluster.token").unlink(missing_ok=True)
    import shutil

    shutil.rmtree(stack.etcd_data_dir, ignore_errors=True)
    state_file(run_dir or Path(stack.etcd_data_dir).parent).unlink(missing_ok=True)
    return True


def running_stack() -> Stack | None:
    if not state_file().exists():
        return None
    stack = Stack(**json.loads(state_file().read_text()))
    return stack if _alive(stack.etcd_pid) else None
