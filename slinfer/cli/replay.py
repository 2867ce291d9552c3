"""`slinfer replay`: drive the live gateway from a ../shared/traces file (docs/SHARING.md)."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.console import Console

from slinfer.client import SlinferError

console = Console(stderr=True)


@click.command()
@click.argument("trace", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--models",
    "n_models",
    type=int,
    default=None,
    help="Take the first k functions of each group of 8 (trace model count).",
)
@click.option(
    "--time-scale",
    type=float,
    default=1.0,
    show_default=True,
    help="Wall seconds per trace second (0.1 replays ten times faster).",
)
@click.option("--duration", type=float, default=None, help="Trace seconds to replay.")
@click.option(
    "--length-scale",
    type=float,
    default=1.0,
    show_default=True,
    help="Multiply input and output token counts (small machines).",
)
@click.option(
    "--model-ids", default=None, help="Comma list: the j-th selected function goes to the j-th id."
)
@click.option(
    "--model-prefix", default=None, help="Instead of --model-ids: ids PREFIX0, PREFIX1, ..."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write one JSON object per request (the simulator's fields).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_context
def replay(
    ctx: click.Context,
    trace: str,
    n_models: int | None,
    time_scale: float,
    duration: float | None,
    length_scale: float,
    model_ids: str | None,
    model_prefix: str | None,
    out: str | None,
    seed: int,
) -> None:
    """Replay a trace (../shared/traces format) against the gateway."""
    import asyncio
    import json
    from pathlib import Path

    from slinfer.client import AsyncClient
    from slinfer.replay import ReplayConfig
    from slinfer.replay import replay as run_replay

    if bool(model_ids) == bool(model_prefix):
        console.print("[red]error[/red] give exactly one of --model-ids or --model-prefix")
        sys.exit(2)
    count = n_models or 1024
    ids = (
        tuple(model_ids.split(","))
        if model_ids
        else tuple(f"{model_prefix}{j}" for j in range(count))
    )
    cfg = ReplayConfig(Path(trace), ids, n_models, time_scale, duration, length_scale, seed)

    async def _go() -> dict[str, Any]:
        async with AsyncClient(ctx.obj["gateway"]) as client:
            summary = await run_replay(client, cfg, Path(out) if out else None)
        return summary.as_dict()

    try:
        result = asyncio.run(_go())
    except (ValueError, SlinferError) as exc:
        console.print(f"[red]error[/red] {exc}")
        sys.exit(2)
    out_console = out or "-"
    console.print(f"replayed {result['requests']} requests; per-request results: {out_console}")
    print(json.dumps(result, indent=2))
