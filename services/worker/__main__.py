"""`python -m slinfer.services.worker`: a worker for one node (a CPU socket or a GPU)."""

from __future__ import annotations

import argparse
import asyncio
import os

from slinfer.services.common.cli_args import common_args, parse_bytes, run_until_signal
from slinfer.services.common.security import security_from_args
from slinfer.services.common.serving import configure_logging, start_metrics
from slinfer.services.worker.engine.dtype import CPU_DTYPE_ENV, DTypePolicy, cpu_dtype_from_env
from slinfer.services.worker.server import WorkerConfig, WorkerService


def parse_cpus(text: str) -> set[int]:
    """'0', '0-3', '1,3,5-6' -> a set of core ids, checked against this machine."""
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a core list: {text!r} (try 0 or 0-3)") from exc
    available = os.sched_getaffinity(0)
    if not cpus or not cpus <= available:
        raise argparse.ArgumentTypeError(
            f"cores {sorted(cpus)} not all available; this process may use {sorted(available)}"
        )
    return cpus


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m slinfer.services.worker", description=__doc__)
    common_args(p, 50061)
    p.add_argument(
        "--advertise", default="", help="address the scheduler uses to reach this worker"
    )
    p.add_argument("--node-id", default="", help="node name (default: kind-<random>)")
    p.add_argument("--kind", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--cores", type=int, default=0, help="cores this node offers")
    p.add_argument(
        "--memory",
        type=parse_bytes,
        default=parse_bytes("8GiB"),
        help="memory this node offers to weights + KV (e.g. 512MiB, 8GiB)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads per engine")
    p.add_argument(
        "--cpus",
        type=parse_cpus,
        default=None,
        help="pin this node to these cores (e.g. 0, 0-3, 1,3); sets --cores and --threads",
    )
    p.add_argument(
        "--cpu-dtype",
        choices=[d.value for d in DTypePolicy],
        default=None,
        help=f"dtype of the CPU engines: auto (bf16 with AVX512_BF16/AMX, else fp32), fp32 or "
        f"bf16 (default: ${CPU_DTYPE_ENV}, else auto)",
    )
    return p


def main() -> None:
    parser_ = parser()
    ns = parser_.parse_args()
    try:
        cpu_dtype = DTypePolicy(ns.cpu_dtype) if ns.cpu_dtype else cpu_dtype_from_env()
        security_from_args(ns)
    except ValueError as exc:
        parser_.error(str(exc))
    configure_logging("worker")
    if ns.cpus:
        # Pin before any engine starts its threads: they inherit the process's mask.
        os.sched_setaffinity(0, ns.cpus)
        ns.cores = ns.cores or len(ns.cpus)
        ns.threads = ns.threads or len(ns.cpus)
    config = WorkerConfig(
        etcd=ns.etcd,
        listen=ns.listen,
        advertise=ns.advertise,
        node_id=ns.node_id,
        kind=ns.kind,
        cores=ns.cores,
        memory_bytes=ns.memory,
        num_threads=ns.threads,
        cpu_dtype=cpu_dtype,
        security=security_from_args(ns),
    )
    service = WorkerService(config)
    start_metrics(ns.metrics_port)
    asyncio.run(run_until_signal(service.start, service.stop))


if __name__ == "__main__":
    main()
