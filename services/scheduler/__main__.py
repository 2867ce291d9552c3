"""`python -m slinfer.services.scheduler`: the scheduler, serving the client-facing Gateway API."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import replace

from slinfer.policy import SystemName
from slinfer.policy.config import Admission, KvScaling
from slinfer.services.common.cli_args import common_args, run_until_signal
from slinfer.services.common.security import security_from_args
from slinfer.services.common.serving import configure_logging, start_metrics
from slinfer.services.scheduler.dispatch_config import LIVE_POLICY, DispatchConfig
from slinfer.services.scheduler.server import SchedulerConfig, SchedulerService


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m slinfer.services.scheduler", description=__doc__)
    common_args(p, 50051)
    p.add_argument(
        "--keep-alive",
        type=float,
        default=300.0,
        help="default seconds an idle instance stays loaded (scale to zero after)",
    )
    p.add_argument(
        "--system",
        default="slinfer",
        choices=[n.value for n in SystemName],
        help="scheduling system (slinfer: token-level sharing; sllm+c: exclusive instances, "
        "ServerlessLLM-style)",
    )
    p.add_argument(
        "--admission",
        default=Admission.SHADOW.value,
        choices=[a.value for a in Admission],
        help="admission rule (DESIGN.md §2): shadow (memory, Σ slices + ρ ≤ 1, a shadow run of "
        "the device) or paper (the first design: decode budget and prefill deadlines)",
    )
    p.add_argument(
        "--queue-grace",
        type=float,
        default=0.0,
        help="extra seconds past its TTFT deadline a request may wait for capacity before "
        "RESOURCE_EXHAUSTED",
    )
    p.add_argument(
        "--l-min",
        type=int,
        default=LIVE_POLICY.l_min_tokens,
        help="KV demand floor L_min in tokens (DESIGN.md §3)",
    )
    p.add_argument(
        "--prior-output-tokens",
        type=float,
        default=LIVE_POLICY.prior_output_tokens,
        help="prior of a model's mean output length Ō before it completed requests",
    )
    p.add_argument(
        "--kv-tokens", type=int, default=4096, help="default KV capacity (tokens) of a new instance"
    )
    p.add_argument(
        "--kv-scaling",
        default="forward",
        choices=[m.value for m in KvScaling],
        help="KV scaling through the memory service: forward (forecast with the mean output "
        "length, L_min and watermark) or reactive (grow only when full; a baseline)",
    )
    p.add_argument(
        "--watermark",
        type=float,
        default=LIVE_POLICY.watermark,
        help="watermark hysteresis w of forward-looking KV scaling (0: none; DESIGN.md §3)",
    )
    p.add_argument(
        "--pack-after",
        type=float,
        default=LIVE_POLICY.pack_after_s,
        help="T_pack: seconds a node stays below the packing threshold before it is emptied",
    )
    return p


def main() -> None:
    parser_ = parser()
    ns = parser_.parse_args()
    configure_logging("scheduler")
    try:
        policy = replace(
            LIVE_POLICY,
            admission=Admission(ns.admission),
            queue_grace_s=ns.queue_grace,
            l_min_tokens=ns.l_min,
            prior_output_tokens=ns.prior_output_tokens,
            kv_scaling=KvScaling(ns.kv_scaling),
            watermark=ns.watermark,
            pack_after_s=ns.pack_after,
        )
    except ValueError as exc:
        parser_.error(str(exc))
    try:
        config = SchedulerConfig(
            etcd=ns.etcd,
            listen=ns.listen,
            default_keep_alive_s=ns.keep_alive,
            dispatch=DispatchConfig(
                system=SystemName(ns.system),
                policy=policy,
                default_kv_capacity_tokens=ns.kv_tokens,
            ),
            security=security_from_args(ns),
        )
        config.security.check_listen(ns.listen)
    except ValueError as exc:
        parser_.error(str(exc))
    service = SchedulerService(config)
    start_metrics(ns.metrics_port)
    asyncio.run(run_until_signal(service.start, service.stop))


if __name__ == "__main__":
    main()
