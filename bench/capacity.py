"""Fig. 22 of the SLINFER paper in the simulator: SLO-met requests and capacity per system.

Runs {3b, 7b, 13b} × {32, 64, 128 models} × {sllm, sllm+c, sllm+c+s, slinfer-gpu, slinfer}
(`slinfer-no-defrag` on request) on `../shared/traces/azure_1_30_128_8_0.json`, prints a table of
SLO-met requests with ratios to `sllm`, and searches each system's capacity: the largest load
(model count, then arrival-rate scale on the 128-model trace) at which ≥ 90 % of requests meet
their SLO (load time excused, as the paper). Writes `--json` and a Fig. 22-like `--png`.

    python -m bench.capacity --json docs/capacity.json --png docs/capacity.png
"""

from __future__ import annotations

import argparse
import enum
import json
import shlex
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slinfer.policy.config import PolicyConfig
from slinfer.policy.systems import SystemName, system_spec
from slinfer.sim.metrics import RunResult
from slinfer.sim.paths import default_trace
from slinfer.sim.run import RunSpec, run

DEFAULT_SYSTEMS = (
    SystemName.SLLM,
    SystemName.SLLM_C,
    SystemName.SLLM_C_S,
    SystemName.SLINFER_GPU,
    SystemName.SLINFER,
)
DEFAULT_SCALES = (1.25, 1.5, 2.0, 2.5, 3.0, 4.0)
TARGET = 0.90


class Variant(enum.Enum):
    """Admission variant of the SLINFER systems (baselines do not shadow-validate)."""

    DESIGN = "design"  # DESIGN.md §2 exactly
    LEFTOVER = "leftover"  # PolicyConfig(prefill_on_leftover=True), see docs/EVALUATION.md


@dataclass(frozen=True, slots=True)
class Point:
    system: SystemName
    model: str
    models: int
    scale: float = 1.0
    variant: Variant = Variant.DESIGN

    @property
    def label(self) -> str:
        suffix = "" if self.variant is Variant.DESIGN else f"[{self.variant.value}]"
        return self.system.value + suffix


def _run_point(args: tuple[Point, str | None, float | None]) -> tuple[Point, RunResult]:
    point, trace, duration = args
    spec = RunSpec(
        system=point.system,
        model=point.model,
        models=point.models,
        trace=Path(trace) if trace else None,
        duration_s=duration,
        rate_scale=point.scale,
        policy=PolicyConfig(prefill_on_leftover=point.variant is Variant.LEFTOVER),
    )
    return point, run(spec)


def run_points(
    points: Sequence[Point], trace: str | None, duration: float | None, jobs: int
) -> dict[Point, RunResult]:
    work = [(p, trace, duration) for p in points]
    results: dict[Point, RunResult] = {}
    if jobs <= 1:
        for item in work:
            point, result = _run_point(item)
            results[point] = result
            _progress(point, result)
        return results
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for point, result in pool.map(_run_point, work):
            results[point] = result
            _progress(point, result)
    return results


def _progress(point: Point, r: RunResult) -> None:
    print(
        f"  {point.model:>4} {point.models:>4} x{point.scale:<4} {point.label:<28}"
        f" slo_met {r.slo_met:>5}/{r.requests:<5} ({r.attainment:.1%})  wall {r.sim_wall_s:5.1f}s",
        file=sys.stderr,
        flush=True,
    )


def row_of(point: Point, r: RunResult) -> dict[str, Any]:
    return {
        "system": point.system.value,
        "variant": point.variant.value,
        "model": point.model,
        "models": point.models,
        "rate_scale": point.scale,
        "trace": r.trace,
        "requests": r.requests,
        "slo_met": r.slo_met,
        "slo_met_strict": r.slo_met_strict,
        "slo_met_token_deadlines": r.slo_met_token_deadlines,
        "completed": r.completed,
        "attainment": round(r.attainment, 4),
        "avg_nodes_cpu": round(r.avg_nodes_cpu, 3),
        "avg_nodes_gpu": round(r.avg_nodes_gpu, 3),
        "preemptions": r.preemptions,
        "resize_events": r.resize_events,
        "decision_us_mean": round(r.decision_us_mean, 1),
        "sim_wall_s": round(r.sim_wall_s, 2),
    }


def capacity_search(
    configs: Sequence[tuple[SystemName, Variant]],
    sizes: Sequence[str],
    ladder_counts: Sequence[int],
    scales: Sequence[float],
    grid: dict[Point, RunResult],
    trace: str | None,
    duration: float | None,
    jobs: int,
) -> tuple[list[dict[str, Any]], dict[Point, RunResult]]:
    """Per system and size: the largest passing load of the ladder (model counts ascending,
    then arrival-rate scales on the largest count). The walk starts at the largest grid
    point below which every grid point passed, so intermediate counts are only run where they
    decide the answer; if even the smallest count fails, nothing passes."""
    extra: dict[Point, RunResult] = {}
    counts = sorted(ladder_counts)
    top = counts[-1]
    ladder_of = {
        (s, v, m): [Point(s, m, n, 1.0, v) for n in counts]
        + [Point(s, m, top, x, v) for x in scales]
        for s, v in configs
        for m in sizes
    }
    # Walk each ladder while it passes; a rung not yet simulated is run (in parallel with the
    # other ladders' next rungs), so scale runs happen only where every model count passed.
    position = {key: _start(ladder_of[key], grid) for key in ladder_of}
    best: dict[tuple[SystemName, Variant, str], Point | None] = {key: None for key in ladder_of}
    while position:
        todo = []
        for key in list(position):
            ladder, i = ladder_of[key], position[key]
            while i < len(ladder) and ladder[i] in grid and grid[ladder[i]].attainment >= TARGET:
                best[key] = ladder[i]
                i += 1
            if i == len(ladder) or ladder[i] in grid:  # exhausted, or a known failure
                del position[key]
                continue
            position[key] = i
            todo.append(ladder[i])
        if todo:
            fresh = run_points(todo, trace, duration, jobs)
            grid.update(fresh)
            extra.update(fresh)
    rows = []
    for (system, variant, model), point in best.items():
        if point is None:
            label, load, att = None, None, None
        else:
            res = grid[point]
            label = f"{point.models}" if point.scale == 1.0 else f"{point.models}x{point.scale:g}"
            load, att = point.models * point.scale, round(res.attainment, 4)
        rows.append(
            {
                "system": system.value,
                "variant": variant.value,
                "model": model,
                "max_models_or_scale": label,
                "load_models_equiv": load,
                "attainment": att,
            }
        )
    return rows, extra


def _start(ladder: list[Point], grid: dict[Point, RunResult]) -> int:
    """Index from which to walk: the rung after the last known pass with no known failure
    below it (rungs in between are unknown and get run)."""
    start = 0
    for i, point in enumerate(ladder):
        result = grid.get(point)
        if result is None:
            continue
        if result.attainment < TARGET:
            break
        start = i
    return start


def table(rows: Iterable[dict[str, Any]], labels: Sequence[str]) -> str:
    by_key: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for r in rows:
        if r["rate_scale"] == 1.0:
            by_key.setdefault((r["model"], r["models"]), {})[_label(r)] = r
    names = list(labels)
    head = f"{'model':>5} {'models':>6} {'reqs':>5} | " + " | ".join(f"{n:>17}" for n in names)
    lines = [head, "-" * len(head)]
    for (model, models), cells in sorted(
        by_key.items(), key=lambda kv: (_size(kv[0][0]), kv[0][1])
    ):
        base = cells.get(SystemName.SLLM.value)
        reqs = next(iter(cells.values()))["requests"]
        parts = []
        for n in names:
            c = cells.get(n)
            if c is None:
                parts.append(f"{'-':>17}")
                continue
            ratio = f"{c['slo_met'] / base['slo_met']:.2f}x" if base and base["slo_met"] else "-"
            parts.append(f"{c['slo_met']:>6} ({ratio:>6})   ")
        lines.append(f"{model:>5} {models:>6} {reqs:>5} | " + " | ".join(parts))
    return "\n".join(lines)


def _label(row: dict[str, Any]) -> str:
    variant = row.get("variant", Variant.DESIGN.value)
    return row["system"] + ("" if variant == Variant.DESIGN.value else f"[{variant}]")


def _size(model: str) -> float:
    digits = "".join(ch for ch in model if ch.isdigit() or ch == ".")
    return float(digits) if digits else 0.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.capacity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--trace", default=None, help=f"trace JSON (default {default_trace().name})")
    p.add_argument("--model", default="3b,7b,13b", help="model size(s), comma list")
    p.add_argument("--models", default="32,64,128", help="model counts, comma list")
    p.add_argument(
        "--systems",
        default=",".join(s.value for s in DEFAULT_SYSTEMS),
        help="comma list of: " + ", ".join(s.value for s in SystemName),
    )
    p.add_argument(
        "--scales",
        default=",".join(f"{x:g}" for x in DEFAULT_SCALES),
        help="arrival-rate scales tried on the largest model count (capacity search)",
    )
    p.add_argument(
        "--variants",
        default="design",
        help="admission variants of the slinfer systems, comma list: design, leftover",
    )
    p.add_argument(
        "--ladder",
        default="16,32,48,64,80,96,112,128",
        help="model counts the capacity search may try (multiples of 16 on the default trace)",
    )
    p.add_argument("--no-search", action="store_true", help="skip the rate-scale search")
    p.add_argument("--duration", type=float, default=None, help="keep arrivals ≤ this (s)")
    p.add_argument("--jobs", type=int, default=1, help="parallel simulator processes")
    p.add_argument("--json", default=None, help="write results as JSON here")
    p.add_argument("--png", default=None, help="draw the Fig. 22-like figure here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [m.strip() for m in args.model.split(",") if m.strip()]
    counts = [int(x) for x in args.models.split(",") if x.strip()]
    systems = [SystemName(s.strip()) for s in args.systems.split(",") if s.strip()]
    scales = [] if args.no_search else [float(x) for x in args.scales.split(",") if x.strip()]
    variants = [Variant(v.strip()) for v in args.variants.split(",") if v.strip()]
    configs = [
        (s, v)
        for v in variants
        for s in systems
        if v is Variant.DESIGN or not system_spec(s).is_baseline
    ]
    ladder = sorted(set(counts) | {int(x) for x in args.ladder.split(",") if x.strip()})
    points = [Point(s, m, n, 1.0, v) for m in sizes for n in counts for s, v in configs]
    grid = run_points(points, args.trace, args.duration, args.jobs)
    capacity, extra = capacity_search(
        configs, sizes, ladder, scales, grid, args.trace, args.duration, args.jobs
    )
    rows = [row_of(p, r) for p, r in grid.items() if p not in extra]
    rows += [row_of(p, r) for p, r in extra.items()]
    labels = [Point(s, "", 0, 1.0, v).label for s, v in configs]
    print(table(rows, labels))
    print()
    print(f"capacity (largest load with >= {TARGET:.0%} of requests meeting the SLO):")
    for c in capacity:
        print(
            f"  {c['model']:>4} {_label(c):<28} {c['max_models_or_scale'] or '< min':>8}"
            f"  attainment {c['attainment'] if c['attainment'] is not None else '-'}"
        )
    command = "python -m bench.capacity " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    if args.json:
        payload = {"bench": "capacity", "command": command, "rows": rows, "capacity": capacity}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    if args.png:
        from bench.capacity_plot import draw

        draw(rows, labels, sizes, Path(args.png), counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
