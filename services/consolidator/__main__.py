"""`python -m services.consolidator`: the consolidator service."""

from __future__ import annotations

import argparse
import asyncio

from services.common.cli_args import common_args, run_until_signal
from services.common.serving import configure_logging, start_metrics
from services.consolidator.server import create


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.consolidator", description=__doc__)
    common_args(parser, 50053)
    ns = parser.parse_args()
    configure_logging("consolidator")
    service = create(ns.etcd, ns.listen)
    start_metrics(ns.metrics_port)
    asyncio.run(run_until_signal(service.start, service.stop))


if __name__ == "__main__":
    main()
