"""Headroom, SLOs and time slices (DESIGN.md §2), from hand-computed cases."""

from __future__ import annotations

import pytest

from slinfer.policy.headroom import deadline_s, headroom_s
from slinfer.policy.slo import SloPolicy
from slinfer.policy.time_slice import device_slices, lease, time_slice
from slinfer.policy.types import RequestView
from tests.policy.factories import device, flat_perf, instance, req


def test_headroom_formula() -> None:
    # h = S + TTFT + TPOT·O − now = 10 + 2 + 0.25·4 − 12.5
    r = RequestView("r", 10.0, 100, 4, ttft_slo_s=2.0, tpot_slo_s=0.25)
    assert headroom_s(r, now=12.5) == pytest.approx(0.5)
    assert deadline_s(r) == pytest.approx(13.0)


def test_headroom_with_margin_and_excuse() -> None:
    r = RequestView("r", 10.0, 100, 4, ttft_slo_s=2.0, tpot_slo_s=0.25, excused_s=1.0)
    # 10 + 1 + 0.95·(2 + 1) − 12.5
    assert headroom_s(r, now=12.5, margin=0.95) == pytest.approx(1.35)


@pytest.mark.parametrize(
    ("input_tokens", "ttft_s"),
    [(1, 0.5), (256, 0.5), (512, 1.0), (1024, 2.0), (4096, 8.0), (100_000, 8.0)],
)
def test_ttft_slo(input_tokens: int, ttft_s: float) -> None:
    policy = SloPolicy()
    assert policy.ttft_s(input_tokens) == pytest.approx(ttft_s)
    assert policy.for_input(input_tokens).tpot_s == pytest.approx(0.25)


def test_slo_policy_validates() -> None:
    with pytest.raises(ValueError):
        SloPolicy(ttft_floor_s=9.0, ttft_cap_s=8.0)


def test_time_slice_is_decode_time_over_tpot() -> None:
    inst = instance(
        "a",
        (req("r1", input_tokens=500), req("r2", input_tokens=700)),
        perf=flat_perf(decode_ms=50.0),
    )
    assert time_slice(inst) == pytest.approx(0.050 / 0.25)
    assert time_slice(inst, margin=0.95) == pytest.approx(0.050 / (0.25 * 0.95))
    assert lease(inst).batch == 2


def test_time_slice_uses_average_context_and_batch() -> None:
    from slinfer.policy.perf_model import PerfModel

    rows = [[1, 10.0], [4, 40.0]]
    perf = PerfModel.from_tables([[1, 1.0]], [(100, rows), (300, [[1, 30.0], [4, 120.0]])])
    # avg ctx (100 + 300) / 2 = 200 -> halfway between rows; batch 2 -> 20 and 60 -> 40 ms.
    inst = instance("a", (req("x", input_tokens=100), req("y", input_tokens=300)), perf=perf)
    assert time_slice(inst) == pytest.approx(0.040 / 0.25)


def test_empty_instance_has_no_slice() -> None:
    assert time_slice(instance("idle")) == 0.0


def test_device_slices_with_replacement() -> None:
    a = instance("a", (req("1"),), perf=flat_perf(50.0))
    b = instance("b", (req("2"),), perf=flat_perf(75.0))
    dev = device(a, b)
    assert device_slices(dev) == pytest.approx(0.2 + 0.3)
    bigger = instance("b", (req("2"), req("3")), perf=flat_perf(100.0))
    assert device_slices(dev, replace=bigger) == pytest.approx(0.2 + 0.4)
    newcomer = instance("c", (req("4"),), perf=flat_perf(25.0))
    assert device_slices(dev, replace=newcomer) == pytest.approx(0.5 + 0.1)
