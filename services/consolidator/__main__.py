"""`python -m slinfer.services.consolidator`: the consolidator service (docs/CONSOLIDATION.md)."""

from __future__ import annotations

import argparse
import asyncio

from slinfer.policy import SystemName
from slinfer.services.common.cli_args import common_args, run_until_signal
from slinfer.services.common.security import security_from_args
from slinfer.services.common.serving import configure_logging, start_metrics
from slinfer.services.consolidator.server import create


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m slinfer.services.consolidator", description=__doc__)
    common_args(p, 50053)
    p.add_argument(
        "--system",
        choices=[s.value for s in SystemName],
        default=SystemName.SLINFER.value,
        help="the schedulers' system; preemption and packing are on only where it preempts "
        "(slinfer, slinfer-gpu), off for slinfer-no-defrag and the baselines",
    )
    p.add_argument(
        "--advisory",
        action="store_true",
        help="log and list plans (ListPlans, slinfer:consolidator_plans_total) without "
        "carrying them out",
    )
    p.add_argument(
        "--pack-every",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="packing cycle: every SECONDS, look for a node that stayed below the packing "
        "threshold for T_pack and whose requests fit on resident instances elsewhere, and "
        "empty it (0: off; default 30; the threshold and T_pack are the schedulers' policy)",
    )
    p.add_argument("--drain-timeout", type=float, default=60.0, metavar="SECONDS")
    p.add_argument("--kv-tokens", type=int, default=4096, help="as the schedulers' setting")
    return p


def main() -> None:
    parser_ = parser()
    ns = parser_.parse_args()
    configure_logging("consolidator")
    try:
        service = create(
            ns.etcd,
            ns.listen,
            system=SystemName(ns.system),
            advisory=ns.advisory,
            pack_every_s=ns.pack_every,
            drain_timeout_s=ns.drain_timeout,
            default_kv_capacity_tokens=ns.kv_tokens,
            security=security_from_args(ns),
        )
    except ValueError as exc:
        parser_.error(str(exc))
    start_metrics(ns.metrics_port)
    asyncio.run(run_until_signal(service.start, service.stop))


if __name__ == "__main__":
    main()
