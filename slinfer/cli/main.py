"""The `slinfer` command line: run a local stack, deploy models, generate, inspect.

Each command group lives in its own module; a command that runs server code (`up`) imports
it only when it runs, so `slinfer generate` loads the SDK alone.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.table import Table

from slinfer.cli.output import (
    DEVICE_NAMES,
    ENGINE_NAMES,
    STATE_NAMES,
    client,
    console,
    fail,
    out,
)
from slinfer.client import Chunk, Completion, SlinferError


@click.group()
@click.option(
    "--gateway",
    envvar="SLINFER_GATEWAY",
    default="127.0.0.1:50051",
    show_default=True,
    help="Gateway address, or several replicas comma-separated (env SLINFER_GATEWAY).",
)
@click.option(
    "--api-key",
    envvar="SLINFER_API_KEY",
    default=None,
    help="API key (env SLINFER_API_KEY; default: the key `slinfer up` wrote to "
    "$SLINFER_HOME/api_key).",
)
@click.option("--tls-ca", envvar="SLINFER_TLS_CA", default=None, help="Connect with TLS (CA).")
@click.pass_context
def main(ctx: click.Context, gateway: str, api_key: str | None, tls_ca: str | None) -> None:
    """slinfer: serverless inference for many small private LLMs."""
    ctx.obj = {"gateway": gateway, "api_key": api_key, "tls_ca": tls_ca}


@main.command()
@click.argument("model")
@click.argument("prompt")
@click.option("--raw", is_flag=True, help="Send PROMPT as raw text, without the chat template.")
@click.option("--max-tokens", type=int, default=None)
@click.option("--temperature", type=float, default=None, help="0 = greedy.")
@click.option("--top-p", type=float, default=None)
@click.option("--stop", multiple=True, help="Stop string (repeatable).")
@click.option("--seed", type=int, default=None)
@click.option(
    "--deterministic",
    is_flag=True,
    help="Batch-invariant decoding: with --temperature 0 or --seed, the same text whatever "
    "else runs and across a failover; models deployed with --engine torch "
    "(docs/RELIABILITY.md).",
)
@click.option("--request-id", default=None)
@click.option("--stats/--no-stats", default=True, help="Print TTFT/TPOT after the answer.")
@click.pass_context
def generate(
    ctx: click.Context,
    model: str,
    prompt: str,
    raw: bool,
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    stop: tuple[str, ...],
    seed: int | None,
    deterministic: bool,
    request_id: str | None,
    stats: bool,
) -> None:
    """Stream MODEL's answer to PROMPT to the terminal."""
    kwargs: dict[str, Any] = {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "stop": list(stop) or None,
        "seed": seed,
        "request_id": request_id,
        "deterministic": deterministic or None,
    }
    if raw:
        kwargs["prompt"] = prompt
    else:
        kwargs["messages"] = [{"role": "user", "content": prompt}]
    try:
        with client(ctx) as c:
            for ev in c.generate(model, **kwargs):
                if isinstance(ev, Chunk):
                    sys.stdout.write(ev.text)
                    sys.stdout.flush()
                elif isinstance(ev, Completion) and stats:
                    sys.stdout.write("\n")
                    console.print(
                        f"[dim]{ev.finish_reason}; {ev.prompt_tokens} prompt + "
                        f"{ev.completion_tokens} completion tokens; TTFT {ev.ttft_s:.3f} s "
                        f"(load {ev.load_s:.2f} s); TPOT {ev.tpot_s * 1000:.1f} ms; "
                        f"instance {ev.instance_id} on {ev.node_id}[/dim]"
                    )
    except SlinferError as exc:
        sys.stdout.write("\n")
        fail(exc)


@main.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Show nodes, instances (state, batch, KV use) and services."""
    try:
        with client(ctx) as c:
            st = c.status()
    except SlinferError as exc:
        fail(exc)
    nodes = Table(
        "node",
        "kind",
        "address",
        "cores",
        "memory used / total MiB",
        "instances",
        "reachable",
        title="nodes",
    )
    for n in st.nodes:
        nodes.add_row(
            n.node_id,
            DEVICE_NAMES.get(n.kind, "?"),
            n.address,
            str(n.cores),
            f"{n.memory_used_bytes >> 20} / {n.memory_bytes >> 20}",
            str(n.instances),
            "yes" if n.reachable else "[red]no[/red]",
        )
    out.print(nodes)
    inst = Table(
        "instance",
        "model",
        "node",
        "state",
        "engine",
        "running",
        "waiting",
        "KV used / cap tokens",
        "KV MiB",
        "weights MiB",
        "idle s",
        title="instances",
    )
    for i in st.instances:
        inst.add_row(
            i.instance_id,
            i.model_id,
            i.node_id,
            STATE_NAMES.get(i.state, "?"),
            ENGINE_NAMES.get(i.engine, "?"),
            str(i.running),
            str(i.waiting),
            f"{i.kv_used_tokens} / {i.kv_capacity_tokens}",
            f"{i.kv_bytes_allocated / 2**20:.1f}",
            f"{i.weights_bytes / 2**20:.1f}",
            f"{i.idle_s:.0f}",
        )
    out.print(inst)
    out.print("services: " + (", ".join(st.services) or "none"))


def _register() -> None:
    from slinfer.cli.consolidate import drain, plans, preempt
    from slinfer.cli.keys_cmd import keys
    from slinfer.cli.models_cmd import delete, deploy, models
    from slinfer.cli.replay import replay
    from slinfer.cli.stack_cmd import down, up
    from slinfer.cli.top import top

    for command in (up, down, deploy, delete, models, replay, drain, preempt, plans, top, keys):
        main.add_command(command)


_register()
