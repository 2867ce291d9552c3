"""Fig. 22-like figure for bench/capacity.py: SLO-met requests and nodes used, per load.

Redraw from a saved run: `python -m bench.capacity_plot docs/capacity.json docs/capacity.png`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

COLORS = {
    "sllm": "#9e9e9e",
    "sllm+c": "#64b5f6",
    "sllm+c+s": "#1565c0",
    "slinfer-gpu": "#ffb74d",
    "slinfer": "#e65100",
    "slinfer-no-defrag": "#8d6e63",
}


def _label(row: dict[str, Any]) -> str:
    variant = row.get("variant", "design")
    return row["system"] + ("" if variant == "design" else f"[{variant}]")


def draw(
    rows: Sequence[dict[str, Any]],
    labels: Sequence[str],
    sizes: Sequence[str],
    path: Path,
    counts: Sequence[int] = (32, 64, 128),
) -> None:
    """Grouped bars per model count in `counts` (the grid; capacity-search rungs are left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(labels)
    cols = len(sizes)
    fig, axes = plt.subplots(2, cols, figsize=(4.6 * cols, 6.4), squeeze=False)
    width = 0.8 / max(len(names), 1)
    for c, size in enumerate(sizes):
        cells = [
            r
            for r in rows
            if r["model"] == size and r["rate_scale"] == 1.0 and r["models"] in counts
        ]
        loads = sorted({r["models"] for r in cells})
        top, bottom = axes[0][c], axes[1][c]
        for k, name in enumerate(names):
            xs, met, total, gpu, cpu = [], [], [], [], []
            for i, load in enumerate(loads):
                match = [r for r in cells if _label(r) == name and r["models"] == load]
                if not match:
                    continue
                r = match[0]
                xs.append(i + (k - (len(names) - 1) / 2) * width)
                met.append(r["slo_met"])
                total.append(r["requests"])
                gpu.append(r["avg_nodes_gpu"])
                cpu.append(r["avg_nodes_cpu"])
            color = COLORS.get(name.split("[")[0], None)
            hatch_top = None if "[" not in name else ".."
            top.bar(xs, met, width, label=name, color=color, hatch=hatch_top)
            bottom.bar(xs, gpu, width, color=color, label=name if c == 0 else None)
            bottom.bar(xs, cpu, width, bottom=gpu, color=color, alpha=0.45, hatch="//")
        requests = sorted({(r["models"], r["requests"]) for r in cells})
        for i, (_, n) in enumerate(requests):
            top.hlines(n, i - 0.45, i + 0.45, colors="black", linestyles="dotted", linewidth=1)
        for ax in (top, bottom):
            ax.set_xticks(range(len(loads)), [str(x) for x in loads])
        top.set_title(f"{size}: SLO-met requests (load excused)")
        bottom.set_title(f"{size}: avg nodes used (GPU solid, CPU hatched)")
        bottom.set_xlabel("models (functions of the trace)")
        top.set_ylabel("requests")
        bottom.set_ylabel("nodes")
    axes[0][0].legend(fontsize=8, loc="upper left")
    fig.suptitle("Simulated Fig. 22 (4 CPU + 4 GPU nodes); dotted: all requests", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    data = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    rows = data["rows"]
    labels = list(dict.fromkeys(_label(r) for r in rows))
    sizes = sorted({r["model"] for r in rows}, key=lambda m: float(m.rstrip("b") or 0))
    draw(rows, labels, sizes, Path(args[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
