"""Live token-level sharing vs exclusive instances, SmolLM2 on this machine, one run.

    .venv/bin/python -m bench.live_sharing [--models 16] [--duration 120] [--time-scale 0.5]
        [--length-scale 0.25] [--json docs/live_sharing.json]

SmolLM2 is deployed under N model ids (one per selected trace function) on one CPU worker,
and a time-scaled slice of ../shared/traces/azure_1_30_128_8_0.json is replayed through the
live gateway in two modes, one after the other in the same run:

- `slinfer`: token-level sharing (arbiter, shadow-validated admission, busiest routing);
- `exclusive`: one resident instance per device (the `sllm+c` policy: ServerlessLLM-style);
  other models cold start when the device frees up after the keep-alive, and wait.

It prints SLO-met requests per mode (load time excused, as the paper, and strict), their
ratio, latency percentiles and the arbiter's overhead as % of engine iteration time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from services.common.etcd_process import start_etcd
from services.inprocess import LiveStack
from services.scheduler.dispatch import DispatchConfig
from services.scheduler.policy import SystemName
from sim.paths import traces_dir
from slinfer.models import build_smollm2
from slinfer.replay import ReplayConfig, replay

# The row fields the JSON promises (issue 5); everything else goes under "extra".
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
]
MODES = {"slinfer": SystemName.SLINFER, "exclusive": SystemName.SLLM_C}


async def warm_profile(model: Path, kv_tokens: int, memory: int) -> float:
    """Load SmolLM2 once so its perf tables are measured and cached before either mode."""
    etcd = start_etcd()
    try:
        stack = await LiveStack.start(
            etcd.endpoint,
            workers=[{"node_id": "cpu-0", "memory_bytes": memory}],
            dispatch=DispatchConfig(default_kv_capacity_tokens=kv_tokens),
        )
        t0 = time.perf_counter()
        await stack.c.deploy("warm", str(model))
        await stack.c.complete("warm", prompt_token_ids=[100, 200, 300], max_tokens=2)
        elapsed = time.perf_counter() - t0
        await stack.stop()
        return elapsed
    finally:
        etcd.stop()


async def run_mode(mode: str, args: argparse.Namespace, model: Path, n_ids: int) -> dict:
    etcd = start_etcd()
    try:
        stack = await LiveStack.start(
            etcd.endpoint,
            workers=[{"node_id": "cpu-0", "memory_bytes": int(args.memory_gib * 2**30)}],
            dispatch=DispatchConfig(system=MODES[mode], default_kv_capacity_tokens=args.kv_tokens),
            keep_alive_s=args.keep_alive,
        )
        try:
            ids = tuple(f"m{j}" for j in range(n_ids))
            slo = {}
            if args.slo_scale != 1.0:  # the paper's SLOs, scaled to this hardware's speed
                slo = {"ttft_slo_s": 0.5 * args.slo_scale, "tpot_slo_s": 0.25 * args.slo_scale}
            for mid in ids:
                await stack.c.deploy(mid, str(model), keep_alive_s=args.keep_alive, **slo)
            cfg = ReplayConfig(
                trace=args.trace,
                model_ids=ids,
                models=args.models,
                time_scale=args.time_scale,
                duration_s=args.duration,
                length_scale=args.length_scale,
                seed=args.seed,
            )
            out = Path(args.out_dir) / f"live_sharing_{mode}.jsonl" if args.out_dir else None
            t0 = time.perf_counter()
            summary = (await replay(stack.c, cfg, out)).as_dict()
            wall = time.perf_counter() - t0
            device = stack.workers[0].device
            return {
                "mode": mode,
                "models": n_ids,
                "wall_s": round(wall, 1),
                **summary,
                "arbiter_overhead_pct": round(device.overhead_ratio * 100, 4),
                "iterations": device.iterations,
            }
        finally:
            await stack.stop()
    finally:
        etcd.stop()


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--trace", type=Path, default=traces_dir() / "azure_1_30_128_8_0.json")
    parser.add_argument("--models", type=int, default=16, help="trace functions (k per group)")
    parser.add_argument("--duration", type=float, default=120.0, help="trace seconds")
    parser.add_argument("--time-scale", type=float, default=0.5)
    parser.add_argument("--length-scale", type=float, default=0.25)
    parser.add_argument("--kv-tokens", type=int, default=1024)
    parser.add_argument("--memory-gib", type=float, default=6.0)
    parser.add_argument("--keep-alive", type=float, default=10.0)
    parser.add_argument("--modes", default="slinfer,exclusive")
    parser.add_argument(
        "--slo-scale",
        type=float,
        default=1.0,
        help="multiply the SLOs (TTFT 0.5 s, TPOT 0.25 s) for slower hardware; 1 = paper's",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=None, help="write per-request JSON lines here")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    model = build_smollm2()
    warm_s = asyncio.run(warm_profile(model, args.kv_tokens, int(args.memory_gib * 2**30)))
    print(f"SmolLM2 first load + profile: {warm_s:.1f} s (cached for the runs below)")
    rows = [asyncio.run(run_mode(m, args, model, args.models)) for m in args.modes.split(",")]
    cols = [*JSON_COLUMNS[:3], "completed", "dropped", *JSON_COLUMNS[3:]]
    print("  ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print("  ".join(f"{_fmt(r.get(c)):>14}" for c in cols))
    by = {r["mode"]: r for r in rows}
    if "slinfer" in by and "exclusive" in by and by["exclusive"]["slo_met"]:
        print(
            f"SLO-met ratio slinfer / exclusive: "
            f"{by['slinfer']['slo_met'] / by['exclusive']['slo_met']:.2f}"
        )
    if args.json:
        keep = JSON_COLUMNS
        doc = {
            "bench": "live_sharing",
            "command": " ".join(["python -m bench.live_sharing", *sys.argv[1:]]),
            "rows": [
                {k: r.get(k) for k in keep}
                | {"extra": {k: v for k, v in r.items() if k not in keep}}
                for r in rows
            ],
        }
        Path(args.json).write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
