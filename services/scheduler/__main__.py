"""`python -m services.scheduler`: the scheduler, serving the client-facing Gateway API."""

from __future__ import annotations

import argparse
import asyncio

from services.common.cli_args import common_args, run_until_signal
from services.common.serving import configure_logging, start_metrics
from services.scheduler.dispatch import DispatchConfig
from services.scheduler.server import SchedulerConfig, SchedulerService


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.scheduler", description=__doc__)
    common_args(parser, 50051)
    parser.add_argument(
        "--keep-alive",
        type=float,
        default=300.0,
        help="default seconds an idle instance stays loaded (scale to zero after)",
    )
    parser.add_argument(
        "--admission-timeout",
        type=float,
        default=60.0,
        help="seconds a request may wait for capacity before RESOURCE_EXHAUSTED",
    )
    parser.add_argument(
        "--kv-tokens", type=int, default=4096, help="default KV capacity (tokens) of a new instance"
    )
    ns = parser.parse_args()
    configure_logging("scheduler")
    config = SchedulerConfig(
        etcd=ns.etcd,
        listen=ns.listen,
        default_keep_alive_s=ns.keep_alive,
        dispatch=DispatchConfig(
            admission_timeout_s=ns.admission_timeout, default_kv_capacity_tokens=ns.kv_tokens
        ),
    )
    service = SchedulerService(config)
    start_metrics(ns.metrics_port)
    asyncio.run(run_until_signal(service.start, service.stop))


if __name__ == "__main__":
    main()
