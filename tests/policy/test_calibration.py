"""Calibration (DESIGN.md §2): what a device measures of itself and how admission uses it.

- ρ: prefill time over the last window, clipped to the window;
- the observed/predicted ratio: a moving average, bounded, quick to leave its prior;
- the scheduler scales every prediction of an instance by its node's ratio (both ways), a
  new instance's predictions too, and reads ρ into the device.
"""

from __future__ import annotations

import pytest

from slinfer.policy.calibration import RATIO_MAX, IterationRatio, PrefillShare
from slinfer.policy.placement import new_instance
from slinfer.services.cluster.live_view import ViewBuilder
from slinfer.services.cluster.state import ClusterView
from slinfer.services.cluster.tracker import Tracker
from slinfer.services.common.records import InstanceRecord, InstanceState, ModelRecord, NodeRecord

TABLES = {
    "prefill_ms": [[1, 10.0], [1024, 100.0]],
    "decode_ms": [[64, [[1, 100.0], [8, 200.0]]], [1024, [[1, 150.0], [8, 300.0]]]],
}  # noqa: E501


def test_prefill_share_is_the_busy_fraction_of_the_window() -> None:
    rho = PrefillShare(window_s=10.0)
    assert rho.share(5.0) == 0.0
    rho.record(1.0, 3.0)  # 2 s of prefill
    rho.record(4.0, 5.0)  # 1 s more
    assert rho.share(5.0) == pytest.approx(0.3)
    assert rho.share(12.0) == pytest.approx(0.2)  # (2, 12]: 1 s of the first span + 1 s
    assert rho.share(15.5) == 0.0  # both spans left the window
    rho.record(20.0, 40.0)  # longer than the window: clipped to it
    assert rho.share(40.0) == 1.0


def test_iteration_ratio_follows_the_device_and_is_bounded() -> None:
    ratio = IterationRatio(alpha=0.1)
    assert ratio.value == 1.0
    ratio.observe(0.2, 0.1)  # the first sample replaces the prior
    assert ratio.value == pytest.approx(2.0)
    for _ in range(200):
        ratio.observe(0.05, 0.1)  # then the device runs faster than its table
    assert ratio.value == pytest.approx(0.5, rel=1e-3)
    ratio.observe(100.0, 0.001)  # one pathological iteration moves it by at most alpha
    assert ratio.value < 0.5 + 0.1 * RATIO_MAX


@pytest.mark.parametrize("ratio", [2.0, 0.5])
def test_the_scheduler_scales_predictions_by_the_node_ratio(tiny_models, ratio: float) -> None:
    view = ClusterView()
    view.nodes["n"] = NodeRecord(
        node_id="n", address="n:1", label="cpu-x", memory_bytes=1 << 30,
        perf_ratio=ratio, prefill_share=0.25, load_bytes_per_s=1e6,
    )  # fmt: skip
    view.models["m"] = ModelRecord(model_id="m", path=str(tiny_models["llama"]))
    view.profiles["m"] = {"cpu-x": TABLES}
    rec = InstanceRecord(
        instance_id="i", model_id="m", node_id="n", state=InstanceState.READY,
        weights_bytes=1000, kv_bytes_per_token=10, kv_capacity_tokens=100,
    )  # fmt: skip
    view.instances["i"] = rec
    builder = ViewBuilder()
    scaled = builder.instance_view(view, Tracker(), rec, "cpu-x", {}, 1024)
    plain = builder.perf(view, "m", "cpu-x")
    assert scaled is not None and plain is not None
    assert scaled.perf.decode_s(64, 1) == pytest.approx(ratio * plain.decode_s(64, 1))
    dispatch = builder.build(view, Tracker(), view.models["m"], [], 1024)
    device = dispatch.devices["n"]
    assert device.prefill_share == 0.25 and device.perf_ratio == ratio
    template = new_instance(dispatch, device, now=0.0)
    assert template is not None
    assert template.perf.decode_s(64, 1) == pytest.approx(ratio * plain.decode_s(64, 1))
    assert template.ready_at_s == pytest.approx(1000 / 1e6)  # the node's load throughput
