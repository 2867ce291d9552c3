"""What every `slinfer` command shares: consoles, the gateway client, enum names, errors."""

from __future__ import annotations

import sys

import click
from rich.console import Console

from slinfer.client import Client, SlinferError

console = Console(stderr=True)
# Piped output keeps whole table rows (rich would fold them to 80 columns).
out = Console() if sys.stdout.isatty() else Console(width=200)

ENGINE_NAMES = {0: "auto", 1: "torch", 2: "vllm", 3: "openvino"}
DEVICE_NAMES = {0: "auto", 1: "cpu", 2: "gpu"}
STATE_NAMES = {0: "?", 1: "loading", 2: "ready", 3: "draining", 4: "unloading", 5: "failed"}


def client(ctx: click.Context) -> Client:
    """The SDK client of the gateway(s) `--gateway` names (comma-separated replicas), with
    `--api-key` (default: $SLINFER_API_KEY, else the key `slinfer up` wrote)."""
    addresses = [a.strip() for a in ctx.obj["gateway"].split(",") if a.strip()]
    return Client(addresses, api_key=ctx.obj.get("api_key"), tls_ca=ctx.obj.get("tls_ca"))


def fail(exc: SlinferError) -> None:
    console.print(f"[red]error[/red] {exc.code.name}: {exc.message}")
    sys.exit(2)
