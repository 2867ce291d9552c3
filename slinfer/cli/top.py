"""`slinfer top`: a live terminal view of the cluster, refreshed every second.

One GetClusterStatus per frame: nodes (memory used, planned by the memory service, offered),
instances (state, time slice and batch from the scheduler's token-budget leases, running and
waiting requests, KV tokens used of capacity, KV bytes allocated beside the ledger's planned
and actual) and the requests the answering scheduler holds.
"""

from __future__ import annotations

import sys
import time

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from slinfer.client import Client, SlinferError
from slinfer.v1 import gateway_pb2

_STATE = {0: "?", 1: "loading", 2: "ready", 3: "draining", 4: "unloading", 5: "failed"}
_KIND = {0: "auto", 1: "cpu", 2: "gpu"}


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f}"


def render(st: gateway_pb2.ClusterStatus, gateway: str, now: float | None = None) -> Group:
    clock = time.strftime("%H:%M:%S", time.localtime(now))
    head = Text.assemble(
        ("slinfer top", "bold"),
        f"  gateway {gateway}  {clock}  requests: ",
        (f"{st.requests_waiting} waiting", "yellow" if st.requests_waiting else ""),
        ", ",
        f"{st.requests_running} running",
    )
    nodes = Table(title="nodes", title_justify="left")
    for col in ("node", "kind", "state", "instances", "memory used MiB", "planned MiB", "of MiB"):
        nodes.add_column(col, justify="left" if col in ("node", "kind", "state") else "right")
    for n in st.nodes:
        state = "draining" if n.draining else ("up" if n.reachable else "[red]unreachable[/red]")
        nodes.add_row(
            n.node_id,
            _KIND.get(n.kind, "?"),
            state,
            str(n.instances),
            _mib(n.memory_used_bytes),
            _mib(n.memory_planned_bytes),
            _mib(n.memory_bytes),
        )
    inst = Table(title="instances", title_justify="left")
    for col in (
        "instance", "model", "node", "state", "time slice", "batch", "running", "waiting",
        "KV tokens used/cap", "KV MiB", "KV planned/actual MiB", "idle s",
    ):  # fmt: skip
        inst.add_column(
            col, justify="left" if col in ("instance", "model", "node", "state") else "right"
        )
    for i in sorted(st.instances, key=lambda i: (i.node_id, i.instance_id)):
        inst.add_row(
            i.instance_id,
            i.model_id,
            i.node_id,
            _STATE.get(i.state, "?"),
            f"{i.time_slice:.0%}" if i.batch else "-",
            str(i.batch),
            str(i.running),
            str(i.waiting),
            f"{i.kv_used_tokens}/{i.kv_capacity_tokens}",
            _mib(i.kv_bytes_allocated),
            f"{_mib(i.kv_planned_bytes)}/{_mib(i.kv_actual_bytes)}",
            f"{i.idle_s:.0f}",
        )
    if not st.instances:
        inst.add_row("(no instances: a request starts one)", *[""] * 11)
    return Group(head, nodes, inst)


@click.command()
@click.option("--once", is_flag=True, help="Print one frame and exit (scripts, tests).")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds per frame.")
@click.pass_context
def top(ctx: click.Context, once: bool, interval: float) -> None:
    """Live view of nodes, instances, time slices, batches, KV and waiting requests."""
    gateway = ctx.obj["gateway"]
    out = Console() if sys.stdout.isatty() else Console(width=200)
    try:
        with Client(gateway) as c:
            if once:
                out.print(render(c.status(), gateway))
                return
            with Live(render(c.status(), gateway), console=out, screen=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(render(c.status(), gateway))
    except SlinferError as exc:
        Console(stderr=True).print(f"[red]error[/red] {exc.code.name}: {exc.message}")
        sys.exit(2)
    except KeyboardInterrupt:
        pass
