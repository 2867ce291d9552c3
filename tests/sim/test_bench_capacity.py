"""bench/capacity.py end to end on a tiny slice: table, JSON schema, capacity search, PNG."""

from __future__ import annotations

import json
from pathlib import Path

from bench.capacity import main

ROW_KEYS = {
    "system",
    "model",
    "models",
    "trace",
    "requests",
    "slo_met",
    "slo_met_strict",
    "avg_nodes_cpu",
    "avg_nodes_gpu",
    "preemptions",
    "sim_wall_s",
}


def test_capacity_bench_smoke(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "cap.json"
    png = tmp_path / "cap.png"
    argv = [
        "--model",
        "3b",
        "--models",
        "16",
        "--duration",
        "20",
        "--systems",
        "sllm,slinfer",
        "--ladder",
        "16,32",
        "--scales",
        "2",
        "--json",
        str(out),
        "--png",
        str(png),
    ]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["bench"] == "capacity" and data["command"].startswith("python -m bench.capacity")
    assert {r["system"] for r in data["rows"]} == {"sllm", "slinfer"}
    for row in data["rows"]:
        assert ROW_KEYS <= row.keys()
        assert row["slo_met_strict"] <= row["slo_met"] <= row["requests"]
    assert {c["system"] for c in data["capacity"]} == {"sllm", "slinfer"}
    for c in data["capacity"]:
        assert {"system", "model", "max_models_or_scale", "attainment"} <= c.keys()
    assert png.stat().st_size > 10_000
    assert "sllm" in capsys.readouterr().out
