"""`python -m slinfer.services.memory`: the memory service."""

from __future__ import annotations

import argparse
import asyncio

from slinfer.services.common.cli_args import common_args, run_until_signal
from slinfer.services.common.security import security_from_args
from slinfer.services.common.serving import configure_logging, start_metrics
from slinfer.services.memory.server import create


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m slinfer.services.memory", description=__doc__)
    common_args(p, 50052)
    return p


def main() -> None:
    parser_ = parser()
    ns = parser_.parse_args()
    configure_logging("memory")
    try:
        service = create(ns.etcd, ns.listen, security_from_args(ns))
    except ValueError as exc:
        parser.error(str(exc))
    start_metrics(ns.metrics_port)
    asyncio.run(run_until_signal(service.start, service.stop))


if __name__ == "__main__":
    main()
