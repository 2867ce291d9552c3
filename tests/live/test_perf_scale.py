"""Workers correct their tables online: observed/predicted decode time reaches admission."""

from __future__ import annotations

from slinfer.policy import PerfModel
from slinfer.services.scheduler.live_view import ViewBuilder
from slinfer.services.scheduler.state import ClusterView
from slinfer.services.scheduler.tracker import Tracker
from slinfer.services.worker.engine.base import EngineKind
from slinfer.services.worker.instance import Instance

TABLES = {
    "prefill_ms": [[1, 10.0], [1024, 100.0]],
    "decode_ms": [[64, [[1, 100.0], [8, 200.0]]], [1024, [[1, 150.0], [8, 300.0]]]],
}


def test_observed_slowdown_becomes_the_published_scale() -> None:
    inst = Instance("i", "m", "/p", EngineKind.TORCH, 1024)
    inst.perf = PerfModel.from_tables(TABLES["prefill_ms"], TABLES["decode_ms"], 1.1)
    predicted = inst.perf.decode_s(64, 1)
    for _ in range(40):
        inst.observe(3 * predicted, 64, 1)
    assert 2.9 < inst.perf_scale < 3.1
    assert inst.record("n")["perf_scale"] == round(inst.perf_scale, 3)
    fast = Instance("j", "m", "/p", EngineKind.TORCH, 1024)
    fast.perf = inst.perf
    for _ in range(40):
        fast.observe(0.5 * predicted, 64, 1)
    assert fast.perf_scale == 1.0, "a faster device never loosens the tables"


def test_scheduler_view_applies_the_scale(tiny_models) -> None:
    view = ClusterView()
    view.nodes["n"] = {"node_id": "n", "kind": "cpu", "label": "cpu-x", "memory_bytes": 1 << 30}
    view.models["m"] = {"model_id": "m", "path": str(tiny_models["llama"])}
    view.profiles["m"] = {"cpu-x": TABLES}
    rec = {
        "instance_id": "i",
        "model_id": "m",
        "node_id": "n",
        "state": "ready",
        "weights_bytes": 1000,
        "kv_bytes_per_token": 10,
        "kv_capacity_tokens": 100,
        "perf_scale": 2.0,
    }
    view.instances["i"] = rec
    builder = ViewBuilder()
    scaled = builder.instance_view(view, Tracker(), rec, "cpu-x", {}, 1024)
    plain = builder.perf(view, "m", "cpu-x")
    assert scaled is not None and plain is not None
    assert abs(scaled.perf.decode_s(64, 1) - 2.0 * plain.decode_s(64, 1)) < 1e-9
    dv = builder.build(view, Tracker(), view.models["m"], [], 1024)
    template = next(iter(dv.perf_by_label.values()))
    assert abs(template.decode_s(64, 1) - 2.0 * plain.decode_s(64, 1)) < 1e-9
