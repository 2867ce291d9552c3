"""Argument helpers shared by the services' `__main__` modules."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
from collections.abc import Awaitable, Callable

from loguru import logger

from slinfer.services.common.security import add_security_args

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1000,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 10**6,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 10**9,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tib": 1 << 40,
}


def parse_bytes(text: str) -> int:
    """'512MiB', '4G', '1.5GiB', '1000000' -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 512MiB or 4GiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def common_args(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument(
        "--etcd",
        default=os.environ.get("SLINFER_ETCD", "127.0.0.1:2379"),
        help="etcd endpoint host:port (env SLINFER_ETCD)",
    )
    parser.add_argument(
        "--listen", default=f"127.0.0.1:{default_port}", help="gRPC listen address host:port"
    )
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port"
    )
    add_security_args(parser)


async def run_until_signal(
    start: Callable[[], Awaitable[object]], stop: Callable[[], Awaitable[None]]
) -> None:
    """Start a service, then stop it cleanly on SIGINT/SIGTERM."""
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    await start()
    await done.wait()
    logger.info("shutting down")
    await stop()
