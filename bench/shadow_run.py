"""Cost of admission's shadow run (DESIGN.md §2: ≤ 1 ms at p99 over 16 instances).

    python -m bench.shadow_run [--instances 16] [--batch 1-4] [--samples 2000] [--json PATH]

Builds random devices of `--instances` co-located instances of a model from the shared
profiles (decode and prefill tables of a CPU socket, or a GPU with `--kind gpu`), each with a
random batch of requests at random points of their streams (some awaiting prefill), adds a
fresh request to one instance and times `shadow_run` (and the whole `shadow_validate`, memory
and steady-state checks included). Prints p50/p99/max in microseconds and how many runs
admitted; the target is p99 ≤ 1000 µs for the shadow run.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

from slinfer.policy import DEFAULT_CONFIG, validate_group
from slinfer.policy.model_spec import ModelSpec
from slinfer.policy.perf_model import PerfModel
from slinfer.policy.shadow_run import shadow_run
from slinfer.policy.types import DeviceKind, DeviceView, InstancePhase, InstanceView, RequestView
from slinfer.sim.paths import load_profiles

TARGET_P99_US = 1000.0


def make_device(
    rng: random.Random, spec: ModelSpec, perf: PerfModel, kind: DeviceKind, n: int, batch: tuple
) -> DeviceView:
    now = 1000.0
    instances = []
    for i in range(n):
        reqs = []
        prefill = set()
        for j in range(rng.randint(*batch)):
            rid = f"i{i}r{j}"
            out = rng.choice((0, rng.randint(1, 200)))
            if out == 0:
                prefill.add(rid)
            # Arrived long enough ago to be on schedule with a little headroom.
            arrival = now - 0.5 - 0.25 * out + rng.uniform(0.0, 2.0)
            reqs.append(RequestView(rid, arrival, rng.randint(50, 1500), out, 4.0, 0.25))
        instances.append(
            InstanceView(
                instance_id=f"i{i}",
                model_name=f"m{i}",
                node_id="n0",
                phase=InstancePhase.READY,
                perf=perf,
                spec=spec,
                requests=tuple(reqs),
                prefill_ids=frozenset(prefill),
                planned_weights_bytes=spec.weights_bytes,
                kv_pool_bytes=spec.cpu_kv_pool_bytes if kind is DeviceKind.CPU else None,
            )
        )
    return DeviceView("n0", kind, kind.value, 1 << 50, tuple(instances))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.shadow_run", description=__doc__)
    p.add_argument("--instances", type=int, default=16)
    p.add_argument("--batch", default="1-4", help="requests per instance, LO-HI")
    p.add_argument("--model", default="llama-3.2-3b")
    p.add_argument("--kind", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    lo, hi = (int(x) for x in args.batch.split("-"))
    kind = DeviceKind(args.kind)
    profile = load_profiles()
    spec = ModelSpec.from_profile(profile, args.model)
    perf = PerfModel.from_profile(profile, spec.name, kind, kind.value)
    rng = random.Random(args.seed)
    run_us: list[float] = []
    validate_us: list[float] = []
    admitted = 0
    for _ in range(args.samples):
        device = make_device(rng, spec, perf, kind, args.instances, (lo, hi))
        target = rng.choice(device.instances)
        new = RequestView("new", 1000.0, rng.randint(50, 1500), 0, 4.0, 0.25)
        t0 = time.thread_time_ns()
        outcome = shadow_run(device, target, (new,), 1000.0, DEFAULT_CONFIG)
        t1 = time.thread_time_ns()
        validate_group(device, target, (new,), 1000.0, DEFAULT_CONFIG)
        t2 = time.thread_time_ns()
        run_us.append((t1 - t0) / 1e3)
        validate_us.append((t2 - t1) / 1e3)
        admitted += outcome.ok
    q = statistics.quantiles
    row = {
        "instances": args.instances,
        "batch": args.batch,
        "kind": args.kind,
        "samples": args.samples,
        "admitted": admitted,
        "shadow_run_p50_us": round(statistics.median(run_us), 1),
        "shadow_run_p99_us": round(q(run_us, n=100)[98], 1),
        "shadow_run_max_us": round(max(run_us), 1),
        "validate_p50_us": round(statistics.median(validate_us), 1),
        "validate_p99_us": round(q(validate_us, n=100)[98], 1),
        "cpu": platform.processor() or platform.machine(),
    }
    print(
        f"{args.instances} instances, batch {args.batch}, {args.kind}: shadow run "
        f"p50 {row['shadow_run_p50_us']} us, p99 {row['shadow_run_p99_us']} us, "
        f"max {row['shadow_run_max_us']} us; whole admission p99 {row['validate_p99_us']} us; "
        f"{admitted}/{args.samples} admitted; target p99 <= {TARGET_P99_US:.0f} us: "
        + ("met" if row["shadow_run_p99_us"] <= TARGET_P99_US else "NOT met")
    )
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
