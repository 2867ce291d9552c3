"""Markdown tables for docs/EVALUATION.md from a bench/capacity.py JSON file.

python -m bench.capacity_report docs/capacity.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

PAPER = {"slinfer-gpu": "1.47–1.62", "slinfer": "1.86–2.54"}


# The admission a row ran with when it names none, and the one shown without a suffix: the
# current default (DESIGN.md §2's shadow run); `design` was its name in older JSON files.
DEFAULT_VARIANTS = ("shadow", "design")


def _label(row: dict[str, Any]) -> str:
    """`slinfer`, `slinfer[paper]`, ...; the baselines admit by caps, whatever the variant."""
    variant = row.get("variant", DEFAULT_VARIANTS[0])
    if variant in DEFAULT_VARIANTS or not row["system"].startswith("slinfer"):
        return row["system"]
    return f"{row['system']}[{variant}]"


def _size(model: str) -> float:
    return float("".join(ch for ch in model if ch.isdigit() or ch == ".") or 0)


def slo_table(
    rows: list[dict[str, Any]], field: str = "slo_met", counts: tuple[int, ...] = (32, 64, 128)
) -> str:
    grid = [r for r in rows if r["rate_scale"] == 1.0 and r["models"] in counts]
    labels = list(dict.fromkeys(_label(r) for r in grid))
    keys = sorted({(r["model"], r["models"]) for r in grid}, key=lambda k: (_size(k[0]), k[1]))
    cells = {(r["model"], r["models"], _label(r)): r for r in grid}
    out = ["| model | models | requests | " + " | ".join(labels) + " |"]
    out.append("|" + " --- |" * (3 + len(labels)))
    for model, models in keys:
        base = cells.get((model, models, "sllm"))
        any_row = next(r for (m, n, _), r in cells.items() if (m, n) == (model, models))
        parts = []
        for label in labels:
            r = cells.get((model, models, label))
            if r is None:
                parts.append("–")
            elif base and base[field]:
                parts.append(f"{r[field]} ({r[field] / base[field]:.2f}×)")
            else:
                parts.append(str(r[field]))
        out.append(f"| {model} | {models} | {any_row['requests']} | " + " | ".join(parts) + " |")
    return "\n".join(out)


def nodes_table(rows: list[dict[str, Any]]) -> str:
    grid = [r for r in rows if r["rate_scale"] == 1.0 and r["models"] == 128]
    out = ["| model | system | avg CPU nodes | avg GPU nodes | preemptions | completed | wall s |"]
    out.append("|" + " --- |" * 7)
    for r in sorted(grid, key=lambda r: (_size(r["model"]), _label(r))):
        out.append(
            f"| {r['model']} | {_label(r)} | {r['avg_nodes_cpu']:.2f} | {r['avg_nodes_gpu']:.2f}"
            f" | {r['preemptions']} | {r['completed']} | {r['sim_wall_s']:.0f} |"
        )
    return "\n".join(out)


def capacity_table(capacity: list[dict[str, Any]]) -> str:
    labels = list(dict.fromkeys(_label(c) for c in capacity))
    sizes = sorted({c["model"] for c in capacity}, key=_size)
    cells = {(c["model"], _label(c)): c for c in capacity}
    out = ["| system | " + " | ".join(sizes) + " |", "|" + " --- |" * (1 + len(sizes))]
    for label in labels:
        parts = []
        for size in sizes:
            c = cells.get((size, label))
            if c is None or c["max_models_or_scale"] is None:
                parts.append("< min")
                continue
            base = cells.get((size, "sllm"))
            ratio = ""
            if base and base["load_models_equiv"]:
                ratio = f" ({c['load_models_equiv'] / base['load_models_equiv']:.2f}×)"
            parts.append(f"{c['max_models_or_scale']}{ratio}")
        out.append(f"| {label} | " + " | ".join(parts) + " |")
    return "\n".join(out)


def headline(rows: list[dict[str, Any]], capacity: list[dict[str, Any]]) -> str:
    at128 = {
        (r["model"], _label(r)): r for r in rows if r["models"] == 128 and r["rate_scale"] == 1
    }
    cap = {(c["model"], _label(c)): c for c in capacity}
    sizes = sorted({m for m, _ in at128}, key=_size)
    out = [
        "| ratio over sllm | paper | "
        + " | ".join(f"{s}: SLO-met @128 | {s}: capacity" for s in sizes)
        + " |",
        "|" + " --- |" * (2 + 2 * len(sizes)),
    ]
    labels = [x for x in dict.fromkeys(lbl for _, lbl in at128) if x.startswith("slinfer")]
    for label in labels:
        parts = []
        for size in sizes:
            base, r = at128.get((size, "sllm")), at128.get((size, label))
            parts.append(f"{r['slo_met'] / base['slo_met']:.2f}×" if base and r else "–")
            cb, cr = cap.get((size, "sllm")), cap.get((size, label))
            if cb and cr and cb["load_models_equiv"] and cr["load_models_equiv"]:
                parts.append(f"{cr['load_models_equiv'] / cb['load_models_equiv']:.2f}×")
            else:
                parts.append("–")
        paper = PAPER.get(label.split("[")[0], "")
        out.append(f"| {label} | {paper} | " + " | ".join(parts) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    data = json.loads(Path(args[0] if args else "docs/capacity.json").read_text())
    print("### SLO-met requests (load time excused), ratio to sllm\n")
    print(slo_table(data["rows"]))
    print("\n### SLO-met requests, strict (load time counted)\n")
    print(slo_table(data["rows"], "slo_met_strict"))
    print("\n### Completed requests (not dropped: the artifact's success count)\n")
    print(slo_table(data["rows"], "completed"))
    print("\n### Capacity: largest load with >= 90 % SLO-met (models, or 128 models x rate)\n")
    print(capacity_table(data["capacity"]))
    print("\n### Headline ratios\n")
    print(headline(data["rows"], data["capacity"]))
    print("\n### Nodes used at 128 models\n")
    print(nodes_table(data["rows"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
