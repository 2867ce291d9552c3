"""Capacity, live and simulated (DESIGN.md §6): the load walked upward until SLOs fail.

    python -m bench.live_capacity [--nodes 1|2] [--modes slinfer,exclusive] [--json PATH]
        [--png PATH] [--models 4,8,16,32,64,100] [--rates 1.5,2,3,4] [--duration 60]

SmolLM2 is deployed under N model ids, one per trace function, and a slice of a
../shared/traces file is replayed through the live gateway (separate processes, like `slinfer
up`). The load grows — first the number of models, then the arrival rate on the most models —
and each mode stops at its first point under 90 % attainment (load time excused); its
capacity is the last point at or above. Modes: `slinfer`, `exclusive` (one resident instance
per node, ServerlessLLM-style, caps from the model's tables) and, with `--nodes 2`,
`slinfer-no-defrag` (no preemption, no packing). For every point the simulator replays the
same requests, given the live workers' measured tables, their per-iteration overhead and load
throughput (sim/live.py): each point is a capacity figure and a fidelity check.

Rows (`--json`): mode, models, rate, requests, slo_met, attainment, attainment_strict,
admitted, admitted_slo_met, latency percentiles, avg_nodes, sim_attainment; `capacity`: the
last passing point per mode. `--png` draws attainment against load (live solid, simulated
dashed). Name the CPU beside the figures (the JSON records it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.live_capacity_run import Point, measure_setup, run_point
from slinfer.models import build_smollm2
from slinfer.sim.paths import traces_dir

TARGET = 0.90
MODES = ("slinfer", "exclusive", "slinfer-no-defrag")


@dataclass(frozen=True, slots=True)
class Walk:
    models: tuple[int, ...]
    rates: tuple[float, ...]

    def points(self) -> list[tuple[int, float]]:
        top = self.models[-1]
        return [(n, 1.0) for n in self.models] + [(top, r) for r in self.rates]


def cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                 if ln.startswith("Model name")), platform.processor())  # fmt: skip
    flags = Path("/proc/cpuinfo").read_text().split()
    extra = sorted({f for f in flags if f.startswith(("avx512", "amx"))})
    return f"{name} ({', '.join(extra) or 'no AVX-512/AMX'})"


def walk_mode(mode: str, walk: Walk, args: argparse.Namespace, model: Path) -> list[dict]:
    rows: list[dict] = []
    for models, rate in walk.points():
        point = Point(mode, models, rate)
        row = asyncio.run(run_point(point, args, model))
        rows.append(row)
        print(_line(row), flush=True)
        if row["attainment"] < TARGET:
            break
    return rows


def capacity(rows: list[dict]) -> dict[str, Any]:
    passing = [r for r in rows if r["attainment"] >= TARGET]
    best = passing[-1] if passing else None
    return {
        "mode": rows[0]["mode"] if rows else None,
        "models": best["models"] if best else 0,
        "rate": best["rate"] if best else 0.0,
        "load": best["models"] * best["rate"] if best else 0.0,
    }


def _line(r: dict) -> str:
    return (
        f"{r['mode']:>18} {r['models']:>4} x{r['rate']:<4g} reqs {r['requests']:>4}  "
        f"attain {r['attainment']:.1%} (strict {r['attainment_strict']:.1%}, sim "
        f"{r['sim_attainment']:.1%})  admitted {r['admitted']:>4} met {r['admitted_slo_met']:>4}"
        f"  ttft p50 {_f(r['ttft_p50_s'])} tpot p50 {_f(r['tpot_p50_s'])}  nodes "
        f"{r['avg_nodes']:.2f}"
    )


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def draw(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for k, mode in enumerate(dict.fromkeys(r["mode"] for r in rows)):
        mine = [r for r in rows if r["mode"] == mode]
        x = [r["models"] * r["rate"] for r in mine]
        color = f"C{k}"
        ax.plot(x, [r["attainment"] for r in mine], "-o", color=color, label=f"{mode} live")
        ax.plot(x, [r["sim_attainment"] for r in mine], "--", color=color, label=f"{mode} sim")
    ax.axhline(TARGET, color="grey", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("load (models x arrival-rate multiplier)")
    ax.set_ylabel("SLO attainment (load excused)")
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.live_capacity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--trace", type=Path, default=traces_dir() / "azure_1_30_100_1_0.json")
    p.add_argument("--nodes", type=int, default=1, choices=(1, 2))
    p.add_argument("--modes", default=None, help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--models", default="4,8,16,32,64,100", help="model counts, ascending")
    p.add_argument("--rates", default="1.5,2,3,4", help="arrival-rate multipliers, then")
    p.add_argument("--duration", type=float, default=60.0, help="trace seconds per point")
    p.add_argument("--time-scale", type=float, default=1.0, help="wall s per trace s")
    p.add_argument("--length-scale", type=float, default=0.1)
    p.add_argument("--slo-scale", type=float, default=1.0, help="x the paper's SLOs")
    p.add_argument("--keep-alive", type=float, default=5.0)
    p.add_argument("--kv-tokens", type=int, default=1024)
    p.add_argument("--worker-memory", default="6GiB")
    p.add_argument("--pack-every", type=float, default=5.0, help="packing cycle (slinfer)")
    p.add_argument("--scheduler-arg", action="append", default=[], help="extra scheduler flag")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--reuse-tables",
        action="store_true",
        help="let the workers reuse perf tables cached in $SLINFER_HOME (default: measure afresh)",
    )
    p.add_argument("--logs", default=None, help="keep every point's service logs here")
    p.add_argument("--json", default=None)
    p.add_argument("--png", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    modes = (args.modes or ("slinfer,exclusive" if args.nodes == 1 else ",".join(MODES))).split(",")
    if unknown := [m for m in modes if m not in MODES]:
        sys.exit(f"unknown modes {unknown}; known: {', '.join(MODES)}")
    walk = Walk(
        tuple(int(x) for x in args.models.split(",")),
        tuple(float(x) for x in args.rates.split(",") if x),
    )
    model = build_smollm2()
    args.work = Path(tempfile.mkdtemp(prefix="slinfer-capacity-"))
    if not args.reuse_tables:
        # The workers measure their tables afresh at warm-up (SLINFER_HOME holds their cache):
        # tables cached on a busier moment would misstate every point.
        os.environ["SLINFER_HOME"] = str(args.work / "home")
    started = time.monotonic()
    args.setup = asyncio.run(measure_setup(args, model))
    print(f"measured: {args.setup}", flush=True)
    rows: list[dict] = []
    for mode in modes:
        rows += walk_mode(mode, walk, args, model)
    caps = [capacity([r for r in rows if r["mode"] == m]) for m in modes]
    cpu = cpu_name()
    print(f"\nCPU: {cpu}; wall {time.monotonic() - started:.0f} s")
    for c in caps:
        print(f"capacity {c['mode']:>18}: {c['models']} models x {c['rate']:g}")
    if args.json:
        doc = {
            "bench": "live_capacity",
            "command": " ".join(["python -m bench.live_capacity", *(argv or sys.argv[1:])]),
            "cpu": cpu,
            "setup": args.setup.as_dict(),
            "rows": rows,
            "capacity": caps,
            "wall_s": round(time.monotonic() - started, 1),
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if args.png:
        draw(rows, Path(args.png), f"{args.nodes} node(s); {cpu}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
