"""`slinfer drain NODE`, `slinfer preempt INSTANCE`, `slinfer plans`: the consolidator's API.

They call `slinfer.v1.Consolidator` (docs/CONSOLIDATION.md) at --consolidator; a replica
that is not the leader answers UNAVAILABLE naming the leader, and the command follows it once.
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any

import click
import grpc
from rich.console import Console
from rich.table import Table

from slinfer.client import default_api_key
from slinfer.v1 import consolidator_pb2, consolidator_pb2_grpc

console = Console(stderr=True)
out = Console() if sys.stdout.isatty() else Console(width=200)
_LEADER = re.compile(r"the leader is at (\S+)$")
_KINDS = {
    consolidator_pb2.PLAN_KIND_PREEMPT_MEMORY: "preempt (memory)",
    consolidator_pb2.PLAN_KIND_PREEMPT_DECODE: "preempt (decode)",
    consolidator_pb2.PLAN_KIND_PREEMPT_OPERATOR: "preempt (operator)",
    consolidator_pb2.PLAN_KIND_DRAIN: "drain",
    consolidator_pb2.PLAN_KIND_PACK: "pack",
    consolidator_pb2.PLAN_KIND_UNDRAIN: "undrain",
}

consolidator_option = click.option(
    "--consolidator",
    envvar="SLINFER_CONSOLIDATOR",
    default="127.0.0.1:50053",
    show_default=True,
    help="Consolidator address (env SLINFER_CONSOLIDATOR); followers redirect to the leader.",
)


def _call(address: str, method: str, request: Any, timeout_s: float) -> Any:
    ctx = click.get_current_context()
    obj = ctx.find_root().obj or {}
    key = obj.get("api_key") or default_api_key()
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    ca = obj.get("tls_ca")
    for _ in range(2):
        channel = (
            grpc.secure_channel(address, grpc.ssl_channel_credentials(open(ca, "rb").read()))
            if ca
            else grpc.insecure_channel(address)
        )
        with channel:
            stub = consolidator_pb2_grpc.ConsolidatorStub(channel)
            try:
                return getattr(stub, method)(request, timeout=timeout_s, metadata=metadata)
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details() or ""  # type: ignore[attr-defined]
                leader = _LEADER.search(details)
                if code == grpc.StatusCode.UNAVAILABLE and leader and ":" in leader.group(1):
                    address = leader.group(1)
                    continue
                console.print(f"[red]error[/red] {code.name}: {details}")
                sys.exit(2)
    console.print("[red]error[/red] UNAVAILABLE: no consolidator leader answered")
    sys.exit(2)


def _print_plan(plan: consolidator_pb2.Plan) -> None:
    what = _KINDS.get(plan.kind, "plan")
    state = (
        "advisory (not carried out)"
        if plan.advisory
        else ("done" if plan.executed else "not completed")
    )
    victims = ", ".join(plan.victim_instance_ids) or "none"
    out.print(
        f"{what} {plan.plan_id}: {state}; instances {victims}; "
        f"requests re-dispatched {plan.requests_moved}"
        + (f"; node {plan.node_id}" if plan.node_id else "")
    )
    if plan.error:
        console.print(f"[yellow]{plan.error}[/yellow]")
        sys.exit(1)


@click.command()
@click.argument("node")
@click.option("--undo", is_flag=True, help="Clear the draining mark: the node takes work again.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait.")
@consolidator_option
def drain(node: str, undo: bool, timeout: float, consolidator: str) -> None:
    """Move every request off NODE, unload its instances and keep placement away from it."""
    req = consolidator_pb2.DrainRequest(node_id=node, undo=undo, timeout_s=timeout)
    _print_plan(_call(consolidator, "Drain", req, timeout + 30))


@click.command()
@click.argument("instance")
@consolidator_option
def preempt(instance: str, consolidator: str) -> None:
    """Evict INSTANCE now; its in-flight requests continue elsewhere, nothing is lost."""
    req = consolidator_pb2.PreemptRequest(instance_id=instance)
    _print_plan(_call(consolidator, "Preempt", req, 120))


@click.command()
@click.option("--limit", type=int, default=20, show_default=True)
@consolidator_option
def plans(limit: int, consolidator: str) -> None:
    """Recent consolidation plans, newest first (advisory ones included)."""
    req = consolidator_pb2.ListPlansRequest(limit=limit)
    resp = _call(consolidator, "ListPlans", req, 10)
    table = Table("age", "plan", "kind", "target", "victims", "node", "moved", "outcome")
    now = time.time()
    for p in resp.plans:
        outcome = "advisory" if p.advisory else ("done" if p.executed else p.error or "-")
        table.add_row(
            f"{now - p.created_unix_s:.0f}s",
            p.plan_id,
            _KINDS.get(p.kind, "?"),
            p.target_instance_id or "-",
            ", ".join(p.victim_instance_ids) or "-",
            p.node_id or "-",
            str(p.requests_moved),
            outcome,
        )
    out.print(table)
    mode = "advisory" if resp.advisory else "acting"
    out.print(f"consolidator: {'leader' if resp.leader else 'follower'}, {mode}")
