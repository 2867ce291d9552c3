"""`slinfer up` / `slinfer down`: a local stack of etcd and every service."""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

import click

from slinfer.cli.output import (
    console,
)


@click.command()
@click.option(
    "--cpu-dtype",
    type=click.Choice(["auto", "fp32", "bf16"]),
    envvar="SLINFER_CPU_DTYPE",
    default="auto",
    show_default=True,
    help="dtype of the CPU engines (env SLINFER_CPU_DTYPE); auto: bf16 where the CPU has "
    "AVX512_BF16 or AMX, fp32 elsewhere.",
)
@click.option(
    "--detach", "-d", is_flag=True, help="Start in the background; stop with `slinfer down`."
)
@click.option("--gateway-port", default=50051, show_default=True)
@click.option("--etcd-port", default=23790, show_default=True)
@click.option("--memory-port", default=50052, show_default=True)
@click.option("--consolidator-port", default=50053, show_default=True)
@click.option("--worker-port", default=50061, show_default=True)
@click.option(
    "--http-port", default=8000, show_default=True, help="OpenAI-compatible HTTP API (0: none)."
)
@click.option(
    "--metrics-base",
    default=9500,
    show_default=True,
    help="Metrics ports: scheduler +1, memory +2, consolidator +3, worker +11.",
)
@click.option(
    "--worker-memory",
    default="8GiB",
    show_default=True,
    help="Memory the CPU worker offers to weights + KV.",
)
@click.option("--worker-threads", type=int, default=None, help="Torch threads of the CPU worker.")
@click.option(
    "--cpu-nodes",
    type=int,
    default=1,
    show_default=True,
    help="CPU workers to start; with more than one, each is pinned to one core.",
)
@click.option(
    "--keep-alive",
    type=float,
    default=300.0,
    show_default=True,
    help="Default seconds an idle instance stays loaded.",
)
@click.option(
    "--schedulers",
    type=click.IntRange(1, 8),
    default=1,
    show_default=True,
    help="Gateway replicas (ports --gateway-port, then +4, +5, ...); the SDK and CLI fail "
    "over between them, a broken stream resumes on another.",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="No authentication (loopback only). Otherwise the stack makes an admin API key, "
    "written to $SLINFER_HOME/api_key, which the CLI and SDK use.",
)
@click.option("--tls-cert", default="", help="Serve TLS from every service: certificate (PEM).")
@click.option("--tls-key", default="", help="...its private key (PEM).")
@click.option("--tls-ca", default="", help="...the CA the services trust (PEM).")
def up(
    cpu_dtype: str,
    detach: bool,
    gateway_port: int,
    etcd_port: int,
    memory_port: int,
    consolidator_port: int,
    worker_port: int,
    http_port: int,
    metrics_base: int,
    worker_memory: str,
    worker_threads: int | None,
    cpu_nodes: int,
    keep_alive: float,
    schedulers: int,
    insecure: bool,
    tls_cert: str,
    tls_key: str,
    tls_ca: str,
) -> None:
    """Start etcd, the scheduler, memory service, consolidator, one CPU worker and the HTTP API."""
    from slinfer.cli.stack import StackConfig, running_stack, start_stack, stop_stack
    from slinfer.services.common.etcd_process import EtcdNotInstalled

    if running_stack() is not None:
        console.print("[yellow]a stack is already running[/yellow]; `slinfer down` stops it")
        sys.exit(1)
    cfg = StackConfig(
        etcd_port=etcd_port,
        gateway_port=gateway_port,
        memory_port=memory_port,
        consolidator_port=consolidator_port,
        worker_port=worker_port,
        http_port=http_port,
        metrics_base=metrics_base,
        worker_memory=worker_memory,
        worker_threads=worker_threads,
        cpu_nodes=cpu_nodes,
        keep_alive_s=keep_alive,
        worker_cpu_dtype=cpu_dtype,
        schedulers=schedulers,
        insecure=insecure,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_ca=tls_ca,
    )
    try:
        stack = start_stack(cfg, echo=lambda s: console.print(f"  started {s}"))
    except EtcdNotInstalled as exc:
        console.print(f"[red]error[/red] {exc}")
        sys.exit(2)
    except RuntimeError as exc:
        console.print(f"[red]error[/red] {exc}")
        sys.exit(2)
    http = f", HTTP API http://{stack.http}/v1" if stack.http else ""
    console.print(f"[green]slinfer is up[/green]: gateway {', '.join(stack.gateways)}{http}")
    if stack.key_file:
        console.print(f"admin API key in {stack.key_file} (the CLI and the SDK read it)")
    elif insecure:
        console.print("[yellow]authentication is off (--insecure)[/yellow]")
    if detach:
        console.print("stop it with `slinfer down`")
        return
    console.print("Ctrl-C stops everything")
    stopping = False

    def _stop(*_a: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    stop_stack(stack)
    console.print("stopped")


@click.command()
def down() -> None:
    """Stop a stack started with `slinfer up --detach`."""
    from slinfer.cli.stack import stop_stack

    if stop_stack():
        console.print("stopped")
    else:
        console.print("no stack is running")
