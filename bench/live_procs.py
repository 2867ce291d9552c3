"""A slinfer stack as separate processes for the live benchmarks, and what they read from it.

The in-process stack (services/inprocess.py) shares one interpreter, so one GIL, between the
replay client, the scheduler and the workers' event loops: under load the client's own work
delays the services it measures. The benchmarks therefore start the stack the way `slinfer up`
does (slinfer/cli/stack.py), on private ports and a private run directory, and read the workers'
figures from their Prometheus endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import tempfile
import threading
import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from slinfer.cli.stack import Stack, StackConfig, start_stack, stop_stack
from slinfer.client import AsyncClient
from slinfer.services.consolidator.occupancy import UsageIntegral

# Away from `slinfer up`'s defaults, so a benchmark never meets a user's stack; a benchmark
# (or a test) already holding them moves the next one up by PORT_STEP (bench_ports()).
BENCH_PORTS = {
    "etcd_port": 24790,
    "gateway_port": 51051,
    "memory_port": 51052,
    "consolidator_port": 51053,
    "worker_port": 51061,
    "http_port": 51080,
    "metrics_base": 9600,
}
PORT_STEP = 100


def bench_ports(cpu_nodes: int, tries: int = 20) -> dict[str, int]:
    """BENCH_PORTS, or the first shift of them by PORT_STEP whose every port is free."""
    for k in range(tries):
        ports = {name: port + k * PORT_STEP for name, port in BENCH_PORTS.items()}
        base = ports["metrics_base"]
        wanted = [p for name, p in ports.items() if name != "metrics_base"]
        wanted += [base + 1, base + 2, base + 3, *(base + 11 + i for i in range(cpu_nodes))]
        wanted += [ports["worker_port"] + i for i in range(cpu_nodes)]
        if all(_free(p) for p in wanted):
            return ports
    raise RuntimeError(f"no free set of benchmark ports near {BENCH_PORTS} ({tries} tried)")


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class ProcStack:
    stack: Stack
    config: StackConfig
    run_dir: Path
    client: AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = self.new_client()

    def new_client(self, **kw: object) -> AsyncClient:
        """A client of every gateway replica, with the stack's admin key."""
        gateways = self.stack.gateways or [self.stack.gateway]
        return AsyncClient(gateways, api_key=self.stack.api_key or "", **kw)  # type: ignore[arg-type]

    def worker_metrics_ports(self) -> list[int]:
        return [self.config.metrics_base + 11 + i for i in range(self.config.cpu_nodes)]


@contextlib.asynccontextmanager
async def proc_stack(
    *,
    cpu_nodes: int = 1,
    worker_memory: str = "6GiB",
    keep_alive_s: float = 10.0,
    scheduler_args: Sequence[str] = (),
    consolidator_args: Sequence[str] = (),
    worker_threads: int | None = None,
    worker_cpu_dtype: str | None = None,
    keep_logs: Path | None = None,
    schedulers: int = 1,
) -> AsyncIterator[ProcStack]:
    """Start the stack; on exit stop it and copy its logs to `keep_logs` when given."""
    _interrupt_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="slinfer-bench-") as tmp:
        run_dir = Path(tmp)
        cfg = StackConfig(
            **bench_ports(cpu_nodes),  # type: ignore[arg-type]
            worker_memory=worker_memory,
            worker_threads=worker_threads,
            worker_cpu_dtype=worker_cpu_dtype,
            cpu_nodes=cpu_nodes,
            keep_alive_s=keep_alive_s,
            log_dir=run_dir / "logs",
            scheduler_args=tuple(scheduler_args),
            consolidator_args=tuple(consolidator_args),
            run_dir=run_dir,
            schedulers=schedulers,
        )
        stack = await asyncio.to_thread(start_stack, cfg, lambda _msg: None)
        ps = ProcStack(stack, cfg, run_dir)
        try:
            yield ps
        finally:
            await ps.client.close()
            await asyncio.to_thread(stop_stack, stack, run_dir)
            if keep_logs is not None:
                shutil.copytree(run_dir / "logs", keep_logs, dirs_exist_ok=True)


def _interrupt_on_sigterm() -> None:
    """A benchmark stopped with SIGTERM (`kill`, `timeout`) stops its stack as Ctrl-C does,
    leaving no services behind: the signal raises KeyboardInterrupt, the stack's exit runs."""
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def scrape(port: int, timeout_s: float = 5.0) -> dict[str, float]:
    """Prometheus text of one process, as {"name{labels}": value} (comments dropped)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


def metric_sum(metrics: dict[str, float], prefix: str) -> float:
    """Sum of every series whose name (before labels) is `prefix`."""
    return sum(v for k, v in metrics.items() if k.split("{", 1)[0] == prefix)


def arbiter_overhead_pct(ports: Sequence[int]) -> tuple[float, int]:
    """Arbiter seconds over engine iteration seconds, all workers, and iterations run."""
    arbiter = iteration = 0.0
    iterations = 0
    for port in ports:
        m = scrape(port)
        arbiter += metric_sum(m, "slinfer:worker_arbiter_seconds_sum")
        iteration += metric_sum(m, "slinfer:worker_iteration_seconds_sum")
        iterations += int(metric_sum(m, "slinfer:worker_iteration_seconds_count"))
    return (100.0 * arbiter / iteration if iteration > 0 else 0.0), iterations


class NodeSampler:
    """`avg_nodes` from outside the stack: GetClusterStatus polled through the gateway, the
    time-average kept by the consolidator's `UsageIntegral` (as `NodeUsage` does in-process)."""

    def __init__(self, client: AsyncClient, every_s: float = 1.0):
        self.client = client
        self.every_s = every_s
        self.usage = UsageIntegral()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="node-sampler")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                status = await self.client.status()
                self.usage.record(len({i.node_id for i in status.instances}))
            await asyncio.sleep(self.every_s)

    async def stop(self) -> float:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.usage.average
