"""`python -m services.worker`: a worker for one node (a CPU socket or a GPU)."""

from __future__ import annotations

import argparse
import asyncio

from services.common.cli_args import common_args, parse_bytes, run_until_signal
from services.common.serving import configure_logging, start_metrics
from services.worker.server import WorkerConfig, WorkerService


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.worker", description=__doc__)
    common_args(parser, 50061)
    parser.add_argument(
        "--advertise", default="", help="address the scheduler uses to reach this worker"
    )
    parser.add_argument("--node-id", default="", help="node name (default: kind-<random>)")
    parser.add_argument("--kind", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--cores", type=int, default=0, help="cores this node offers")
    parser.add_argument(
        "--memory",
        type=parse_bytes,
        default=parse_bytes("8GiB"),
        help="memory this node offers to weights + KV (e.g. 512MiB, 8GiB)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads per engine")
    ns = parser.parse_args()
    configure_logging("worker")
    config = WorkerConfig(
        etcd=ns.etcd,
        listen=ns.listen,
        advertise=ns.advertise,
        node_id=ns.node_id,
        kind=ns.kind,
        cores=ns.cores,
        memory_bytes=ns.memory,
        num_threads=ns.threads,
    )
    service = WorkerService(config)
    start_metrics(ns.metrics_port)
    asyncio.run(run_until_signal(service.start, service.stop))


if __name__ == "__main__":
    main()
