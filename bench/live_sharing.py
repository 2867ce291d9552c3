"""Live token-level sharing vs exclusive instances, SmolLM2 on this machine, repeated runs.

    .venv/bin/python -m bench.live_sharing [--models 16] [--duration 120] [--time-scale 1.0]
        [--length-scale 0.1] [--slo-scale 4] [--nodes 1|2] [--repeats 3]
        [--modes slinfer,exclusive] [--json docs/live_sharing.json]

SmolLM2 is deployed under N model ids (one per selected trace function) and a time-scaled
slice of ../shared/traces/azure_1_30_128_8_0.json is replayed through the live gateway, once
per mode and repeat, modes interleaved (A B A B ...) so drift on the machine hits all alike:

- `slinfer`: token-level sharing (arbiter, shadow-validated admission, busiest routing,
  consolidation);
- `slinfer-no-defrag`: the same without consolidation (no preemption, no packing);
- `exclusive`: one resident instance per device (the `sllm+c` policy, ServerlessLLM-style,
  with a concurrency cap derived from the model's measured tables); other models cold start
  when the device frees up after the keep-alive, and wait.

The stack runs as separate processes (bench/live_procs.py), one CPU worker using both cores,
or with `--nodes 2` two workers pinned to one core each. Printed per run and summarised per
mode: SLO-met requests (load time excused, as the paper, and strict), latency percentiles,
the arbiter's overhead as % of engine iteration time, and the time-average number of nodes
hosting an instance (`avg_nodes`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.live_procs import NodeSampler, arbiter_overhead_pct, proc_stack
from slinfer.models import build_smollm2
from slinfer.policy import SystemName
from slinfer.replay import ReplayConfig, replay
from slinfer.sim.paths import traces_dir

# The row fields the JSON promises (issues 5 and 7); everything else goes under "extra".
JSON_COLUMNS = [
    "mode",
    "models",
    "requests",
    "slo_met",
    "slo_met_strict",
    "ttft_p50_s",
    "ttft_p99_s",
    "tpot_p50_s",
    "arbiter_overhead_pct",
    "avg_nodes",
]
MODES = {
    "slinfer": SystemName.SLINFER,
    "slinfer-no-defrag": SystemName.SLINFER_NO_DEFRAG,
    "exclusive": SystemName.SLLM_C,
}


def _stack_kwargs(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    return {
        "cpu_nodes": args.nodes,
        "worker_memory": args.worker_memory,
        "keep_alive_s": args.keep_alive,
        "scheduler_args": [
            "--system",
            MODES[mode].value,
            "--kv-tokens",
            str(args.kv_tokens),
            *args.scheduler_arg,
        ],
        # The consolidator follows the scheduler's system: preemption and packing in
        # `slinfer`, neither in `slinfer-no-defrag` nor in the baseline.
        "consolidator_args": [
            "--system",
            MODES[mode].value,
            "--kv-tokens",
            str(args.kv_tokens),
            "--pack-every",
            str(args.pack_every),
        ],
    }


async def warm_profile(args: argparse.Namespace, model: Path) -> float:
    """Load SmolLM2 once on the same node shape, so its tables are measured and cached."""
    async with proc_stack(**_stack_kwargs(args, "slinfer")) as ps:
        t0 = time.perf_counter()
        for j in range(args.nodes):  # one instance per node: each node label gets its tables
            await ps.client.deploy(f"warm{j}", str(model))
            await ps.client.complete(f"warm{j}", prompt_token_ids=[100, 200, 300], max_tokens=2)
        return time.perf_counter() - t0


async def run_mode(mode: str, args: argparse.Namespace, model: Path, repeat: int) -> dict:
    logs = Path(args.logs) / f"{mode}_{repeat}" if args.logs else None
    async with proc_stack(**_stack_kwargs(args, mode), keep_logs=logs) as ps:
        ids = tuple(f"m{j}" for j in range(args.models))
        slo = {}
        if args.slo_scale != 1.0:  # the paper's SLOs, scaled to this hardware's speed
            slo = {"ttft_slo_s": 0.5 * args.slo_scale, "tpot_slo_s": 0.25 * args.slo_scale}
        for mid in ids:
            await ps.client.deploy(mid, str(model), keep_alive_s=args.keep_alive, **slo)
        cfg = ReplayConfig(
            trace=args.trace,
            model_ids=ids,
            models=args.models,
            time_scale=args.time_scale,
            duration_s=args.duration,
            length_scale=args.length_scale,
            seed=args.seed,
        )
        out = None
        if args.out_dir:
            Path(args.out_dir).mkdir(parents=True, exist_ok=True)
            out = Path(args.out_dir) / f"live_sharing_{mode}_{repeat}.jsonl"
        sampler = NodeSampler(ps.client)
        sampler.start()
        t0 = time.perf_counter()
        summary = (await replay(ps.client, cfg, out)).as_dict()
        wall = time.perf_counter() - t0
        avg_nodes = await sampler.stop()
        overhead, iterations = arbiter_overhead_pct(ps.worker_metrics_ports())
        return {
            "mode": mode,
            "models": args.models,
            **summary,
            "arbiter_overhead_pct": round(overhead, 4),
            "avg_nodes": round(avg_nodes, 3),
            "repeat": repeat,
            "nodes": args.nodes,
            "wall_s": round(wall, 1),
            "iterations": iterations,
        }


def summarise(rows: list[dict]) -> dict[str, Any]:
    """Per mode: mean, min and max of SLO-met (both views) and avg_nodes over the repeats."""
    out: dict[str, Any] = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode]
        entry: dict[str, Any] = {"runs": len(mine)}
        for key in ("slo_met", "slo_met_strict", "avg_nodes"):
            vals = [float(r[key]) for r in mine]
            entry[key] = {
                "mean": round(statistics.fmean(vals), 3),
                "min": min(vals),
                "max": max(vals),
                "values": vals,
            }
        out[mode] = entry
    if "slinfer" in out and "exclusive" in out:
        base = out["exclusive"]["slo_met"]["mean"]
        out["ratio_slinfer_over_exclusive"] = (
            round(out["slinfer"]["slo_met"]["mean"] / base, 3) if base else None
        )
    return out


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--trace", type=Path, default=traces_dir() / "azure_1_30_128_8_0.json")
    p.add_argument("--models", type=int, default=16, help="trace functions (k per group)")
    p.add_argument("--duration", type=float, default=120.0, help="trace seconds")
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--length-scale", type=float, default=0.1)
    p.add_argument("--kv-tokens", type=int, default=1024)
    p.add_argument("--worker-memory", default="6GiB", help="memory each worker offers")
    p.add_argument("--keep-alive", type=float, default=5.0)
    p.add_argument(
        "--pack-every", type=float, default=5.0, help="consolidator packing period (slinfer)"
    )
    p.add_argument("--nodes", type=int, default=1, choices=(1, 2), help="CPU workers")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--modes", default="slinfer,exclusive", help=f"of {','.join(MODES)}")
    p.add_argument(
        "--slo-scale",
        type=float,
        default=4.0,
        help="multiply the SLOs (TTFT 0.5 s, TPOT 0.25 s) for slower hardware; 1 = paper's",
    )
    p.add_argument(
        "--scheduler-arg", action="append", default=[], help="extra scheduler flag (repeat)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=None, help="write per-request JSON lines here")
    p.add_argument("--logs", default=None, help="keep each run's service logs under this dir")
    p.add_argument("--json", default=None)
    return p


def main() -> None:
    args = _parser().parse_args()
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown or args.repeats < 1:
        sys.exit(f"unknown modes {unknown} (known: {', '.join(MODES)}) or --repeats < 1")
    model = build_smollm2()
    warm_s = asyncio.run(warm_profile(args, model))
    print(f"SmolLM2 first loads + profiles: {warm_s:.1f} s (cached for the runs below)")
    cols = [*JSON_COLUMNS[:3], "completed", "dropped", *JSON_COLUMNS[3:], "repeat"]
    print("  ".join(f"{c:>12.12}" for c in cols), flush=True)
    rows = []
    for repeat in range(args.repeats):
        for mode in modes:
            row = asyncio.run(run_mode(mode, args, model, repeat))
            rows.append(row)
            print("  ".join(f"{_fmt(row.get(c)):>12.12}" for c in cols), flush=True)
    summary = summarise(rows)
    for mode in modes:
        s = summary[mode]
        print(
            f"{mode:>18}: SLO-met mean {s['slo_met']['mean']:.1f} "
            f"(min {s['slo_met']['min']:.0f}, max {s['slo_met']['max']:.0f}; strict mean "
            f"{s['slo_met_strict']['mean']:.1f}), avg_nodes {s['avg_nodes']['mean']:.2f}"
        )
    ratio = summary.get("ratio_slinfer_over_exclusive")
    if ratio is not None:
        print(f"SLO-met ratio slinfer / exclusive (means): {ratio}")
    if args.json:
        doc = {
            "bench": "live_sharing",
            "command": " ".join(["python -m bench.live_sharing", *sys.argv[1:]]),
            "rows": [
                {k: r.get(k) for k in JSON_COLUMNS}
                | {"extra": {k: v for k, v in r.items() if k not in JSON_COLUMNS}}
                for r in rows
            ],
            "summary": summary,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
