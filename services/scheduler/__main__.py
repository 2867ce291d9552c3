"""`python -m slinfer.services.scheduler`: the scheduler, serving the client-facing Gateway API."""

from __future__ import annotations

import argparse
import asyncio

from slinfer.policy import SystemName
from slinfer.policy.kv_scaling import KvScaling
from slinfer.services.common.cli_args import common_args, run_until_signal
from slinfer.services.common.serving import configure_logging, start_metrics
from slinfer.services.scheduler.dispatch import DispatchConfig
from slinfer.services.scheduler.server import SchedulerConfig, SchedulerService


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m slinfer.services.scheduler", description=__doc__)
    common_args(parser, 50051)
    parser.add_argument(
        "--keep-alive",
        type=float,
        default=300.0,
        help="default seconds an idle instance stays loaded (scale to zero after)",
    )
    parser.add_argument(
        "--system",
        default="slinfer",
        choices=[n.value for n in SystemName],
        help="scheduling system (slinfer: token-level sharing; sllm+c: exclusive instances, "
        "ServerlessLLM-style)",
    )
    parser.add_argument(
        "--queue-grace",
        type=float,
        default=0.0,
        help="extra seconds past its TTFT deadline a request may wait for capacity before "
        "RESOURCE_EXHAUSTED",
    )
    parser.add_argument(
        "--l-min", type=int, default=1024, help="KV demand floor L_min in tokens (DESIGN.md §3)"
    )
    parser.add_argument(
        "--prefill-on-leftover",
        action="store_true",
        help="check prefill deadlines on the device share decoding leaves (docs/EVALUATION.md)",
    )
    parser.add_argument(
        "--kv-tokens", type=int, default=4096, help="default KV capacity (tokens) of a new instance"
    )
    parser.add_argument(
        "--kv-scaling",
        default="forward",
        choices=[m.value for m in KvScaling],
        help="KV scaling through the memory service: forward (forecast with the mean output "
        "length, L_min and watermark) or reactive (grow only when full; a baseline)",
    )
    parser.add_argument(
        "--watermark",
        type=float,
        default=0.25,
        help="watermark hysteresis w of forward-looking KV scaling (0: none; DESIGN.md §3)",
    )
    ns = parser.parse_args()
    configure_logging("scheduler")
    config = SchedulerConfig(
        etcd=ns.etcd,
        listen=ns.listen,
        default_keep_alive_s=ns.keep_alive,
        dispatch=DispatchConfig(
            system=SystemName(ns.system),
            queue_grace_s=ns.queue_grace,
            default_kv_capacity_tokens=ns.kv_tokens,
            l_min_tokens=ns.l_min,
            prefill_on_leftover=ns.prefill_on_leftover,
            kv_scaling=KvScaling(ns.kv_scaling),
            watermark=ns.watermark,
        ),
    )
    service = SchedulerService(config)
    start_metrics(ns.metrics_port)
    asyncio.run(run_until_signal(service.start, service.stop))


if __name__ == "__main__":
    main()
