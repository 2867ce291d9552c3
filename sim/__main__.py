"""`python -m slinfer.sim --trace PATH --system slinfer --model 7b --models 64 --duration 1800`.

Replays a trace on a simulated cluster with one system's policies and prints the metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from slinfer.policy.systems import SystemName
from slinfer.sim.metrics import RunResult
from slinfer.sim.run import RunSpec, run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m slinfer.sim", description=__doc__)
    p.add_argument("--trace", type=Path, default=None, help="trace JSON (../shared/traces/…)")
    p.add_argument("--system", default="slinfer", choices=[s.value for s in SystemName])
    p.add_argument("--model", default="7b", help="3b, 7b, 8b, 13b or a profile model name")
    p.add_argument("--models", type=int, default=None, help="model count (k per group of 8)")
    p.add_argument("--duration", type=float, default=None, help="keep arrivals ≤ this (s)")
    p.add_argument("--rate-scale", type=float, default=1.0, help="arrival-rate multiplier")
    p.add_argument("--cluster", type=Path, default=None, help="cluster description JSON")
    p.add_argument("--cpu-nodes", type=int, default=4)
    p.add_argument("--gpu-nodes", type=int, default=4)
    p.add_argument("--gpu-load-gbps", type=float, default=None, help="GPU load bandwidth")
    p.add_argument("--cpu-load-gbps", type=float, default=None, help="CPU load bandwidth")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise-cv", type=float, default=0.0, help="engine time noise (CV)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p.parse_args(argv)


def format_result(r: RunResult) -> str:
    def f(v: float | None, fmt: str = ".3f") -> str:
        return "-" if v is None else format(v, fmt)

    lines = [
        f"system {r.system}  model {r.model}  models {r.models}  trace {r.trace}",
        f"requests {r.requests}  completed {r.completed}  dropped {r.dropped}",
        f"SLO met (load excused) {r.slo_met} ({r.attainment:.1%})  strict {r.slo_met_strict}"
        f"  every token by its deadline {r.slo_met_token_deadlines}",
        f"avg nodes used: cpu {r.avg_nodes_cpu:.2f}  gpu {r.avg_nodes_gpu:.2f}",
        f"decode tok/(node·s): cpu {f(r.decode_tokens_per_node_s_cpu, '.1f')}"
        f"  gpu {f(r.decode_tokens_per_node_s_gpu, '.1f')}",
        f"instances per used node: cpu {f(r.instances_per_node_cpu, '.2f')}"
        f"  gpu {f(r.instances_per_node_gpu, '.2f')}",
        f"GPU KV utilisation {f(r.kv_utilisation_gpu)}  resize events {r.resize_events}"
        f" (deferred by the ledger {r.deferred_resizes})",
        f"preemptions {r.preemptions}  kv evictions {r.kv_evictions}  loads {r.loads}",
        f"TTFT p50/p99 {f(r.ttft_p50_s)}/{f(r.ttft_p99_s)} s"
        f"  TPOT p50/p99 {f(r.tpot_p50_s)}/{f(r.tpot_p99_s)} s",
        f"decision time mean {r.decision_us_mean:.1f} us  p99 {r.decision_us_p99:.1f} us",
        f"simulated {r.sim_time_s:.0f} s in {r.sim_wall_s:.2f} s wall"
        f" ({r.sim_time_s / max(r.sim_wall_s, 1e-9):.0f}x), {r.events} events",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = RunSpec(
        system=SystemName(args.system),
        model=args.model,
        models=args.models,
        trace=args.trace,
        duration_s=args.duration,
        rate_scale=args.rate_scale,
        cluster=args.cluster,
        cpu_nodes=args.cpu_nodes,
        gpu_nodes=args.gpu_nodes,
        gpu_load_gbps=args.gpu_load_gbps,
        cpu_load_gbps=args.cpu_load_gbps,
        seed=args.seed,
        engine_noise_cv=args.noise_cv,
    )
    result = run(spec)
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
