"""Forward-looking vs reactive-only KV scaling under memory pressure, live, one run.

    .venv/bin/python -m bench.memory [--requests 120] [--rate 4] [--memory-mb 3.5]
        [--seed 0] [--engine auto|torch|openvino] [--json docs/memory.json]

Three tiny random-weight models (2 Llama, 1 Qwen2) share one CPU worker whose memory is
limited to a few MB, so that their KV pools contend. The same seeded request stream (Poisson
arrivals, prompts of 32-192 tokens, 32-320 output tokens with ignore_eos) is replayed through
the live gateway twice, one mode after the other:

- `forward`: the scheduler scales each instance's KV to its forward-looking demand
  `C·max(Σ(I + max(O, Ō)), L_min)` with watermark w (DESIGN.md §3);
- `reactive`: no forecast, no watermark: an instance's KV grows only when its requests fill it.

Both go through the same memory service and ledger. Per mode it reports requests, failed
(an error or fewer tokens than asked), OOM hazards (a request refused or preempted because the
instance's KV pool was full), resizes, and resize time as % of the instances' lifetime.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from slinfer import Completion
from slinfer.client import SlinferError
from slinfer.models import build_random_model
from slinfer.policy.config import KvScaling
from slinfer.services.common.etcd_process import start_etcd
from slinfer.services.inprocess import LiveStack
from slinfer.services.scheduler.dispatch_config import LIVE_POLICY, DispatchConfig

JSON_COLUMNS = [
    "mode",
    "engine",
    "requests",
    "failed",
    "oom_hazards",
    "resizes",
    "resize_overhead_pct",
]
MODELS = (("m-llama-a", "llama", 0), ("m-llama-b", "llama", 2), ("m-qwen", "qwen2", 1))


@dataclass(frozen=True, slots=True)
class Job:
    at_s: float
    model: str
    prompt: tuple[int, ...]
    max_tokens: int


def workload(n: int, rate: float, seed: int) -> list[Job]:
    rng = random.Random(seed)
    t, jobs = 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate)
        prompt = tuple(rng.randrange(5, 400) for _ in range(rng.randint(32, 192)))
        jobs.append(Job(t, rng.choice(MODELS)[0], prompt, rng.randint(32, 320)))
    return jobs


async def run_mode(
    mode: KvScaling,
    jobs: list[Job],
    paths: dict[str, Path],
    memory: int,
    profiles: Path,
    engine: str = "auto",
) -> dict[str, object]:
    etcd = start_etcd()
    try:
        stack = await LiveStack.start(
            etcd.endpoint,
            workers=[
                {
                    "node_id": f"bench-{mode.value}",
                    "memory_bytes": memory,
                    "num_threads": 1,
                    "profile_dir": profiles,
                }
            ],
            dispatch=DispatchConfig(
                default_kv_capacity_tokens=256,
                policy=replace(LIVE_POLICY, l_min_tokens=64, kv_scaling=mode),
            ),
        )
        try:
            for model_id, path in paths.items():
                await stack.c.deploy(
                    model_id,
                    str(path),
                    ttft_slo_s=120.0,
                    tpot_slo_s=5.0,
                    keep_alive_s=600.0,
                    engine=engine,
                )
            failed, errors = 0, {}
            t0 = time.monotonic()

            async def one(job: Job) -> bool:
                await asyncio.sleep(max(0.0, t0 + job.at_s - time.monotonic()))
                final = None
                try:
                    async for ev in stack.c.generate(
                        job.model,
                        prompt_token_ids=list(job.prompt),
                        max_tokens=job.max_tokens,
                        ignore_eos=True,
                        temperature=0,
                    ):
                        if isinstance(ev, Completion):
                            final = ev
                except SlinferError as exc:
                    errors[exc.code.name] = errors.get(exc.code.name, 0) + 1
                    return False
                return final is not None and final.completion_tokens == job.max_tokens

            results = await asyncio.gather(*(one(j) for j in jobs))
            wall_s = time.monotonic() - t0
            failed = sum(1 for ok in results if not ok)
            c = stack.workers[0].memory.totals()
            hazards = c.kv_refusals + c.kv_pressure_events
            overhead = 100.0 * c.resize_s / c.lifetime_s if c.lifetime_s > 0 else 0.0
            engines = sorted({i.engine_kind.value for i in stack.workers[0].instances.values()})
            return {
                "mode": mode.value,
                "engine": ",".join(engines) or engine,
                "requests": len(jobs),
                "failed": failed,
                "oom_hazards": hazards,
                "resizes": c.resizes,
                "resize_overhead_pct": round(overhead, 4),
                "extra": {
                    "kv_refusals": c.kv_refusals,
                    "kv_preemptions": c.kv_pressure_events,
                    "errors": errors,
                    "peak_measured_bytes": c.peak_measured_bytes,
                    "node_memory_bytes": memory,
                    "deferred_loads": c.deferred_loads,
                    "resize_s": round(c.resize_s, 4),
                    "instance_lifetime_s": round(c.lifetime_s, 2),
                    "scale_answers": dict(stack.scheduler.dispatcher.kv.statuses),
                    "wall_s": round(wall_s, 1),
                },
            }
        finally:
            await stack.stop()
    finally:
        etcd.stop()


def table(rows: list[dict[str, object]]) -> str:
    head = (
        f"{'mode':<10}{'engine':>9}{'requests':>9}{'failed':>8}{'oom_hazards':>13}"
        f"{'resizes':>9}{'resize %':>10}"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['mode']:<10}{r['engine']:>9}{r['requests']:>9}{r['failed']:>8}{r['oom_hazards']:>13}"
            f"{r['resizes']:>9}{r['resize_overhead_pct']:>10.3f}"
        )
    return "\n".join(lines)


async def main_async(ns: argparse.Namespace) -> list[dict[str, object]]:
    root = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    # OpenVINO conversions of these throw-away models stay with them, not in the user's cache.
    os.environ.setdefault("SLINFER_OV_CACHE", str(root / "openvino"))
    paths = {m: build_random_model(arch, root / m, seed=s) for m, arch, s in MODELS}  # type: ignore[arg-type]
    jobs = workload(ns.requests, ns.rate, ns.seed)
    memory = int(ns.memory_mb * 1_000_000)
    rows = []
    for mode in (KvScaling.FORWARD, KvScaling.REACTIVE):
        rows.append(await run_mode(mode, jobs, paths, memory, root / "profiles", ns.engine))
        print(f"{mode.value}: done", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--requests", type=int, default=120)
    parser.add_argument("--rate", type=float, default=4.0, help="arrivals per second")
    parser.add_argument("--memory-mb", type=float, default=3.5, help="the node's memory (MB)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--engine", choices=["auto", "torch", "openvino"], default="auto", help="CPU engine"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    ns = parser.parse_args()
    rows = asyncio.run(main_async(ns))
    print(table(rows))
    for r in rows:
        print(r["mode"], json.dumps(r["extra"]))
    if ns.json is not None:
        command = "python -m bench.memory " + " ".join(sys.argv[1:])
        ns.json.write_text(
            json.dumps({"bench": "memory", "command": command.strip(), "rows": rows}, indent=2)
            + "\n"
        )


if __name__ == "__main__":
    main()
