"""Admission by shadow validation (DESIGN.md §2): each check from hand-computed cases.

Model in these tests: 1 MiB of KV per token (1024 tokens per GiB), 10 GiB of weights,
prefill 1 ms per input token, flat decode time.
"""

from __future__ import annotations

from slinfer.policy.admission import (
    AdmissionReason,
    Check,
    shadow_validate,
)
from slinfer.policy.config import PolicyConfig
from slinfer.policy.types import DeviceKind, InstancePhase
from tests.policy.factories import device, flat_perf, instance, req

EXACT = PolicyConfig(slo_margin=1.0)


def _memory_device(kv_a_gb: float = 2.0) -> tuple:
    a = instance("a", (), kv_gb=kv_a_gb)
    b = instance("b", (req("old", output_tokens=5),), kv_gb=50.0)
    # planned: a 10 + 2, b 10 + 50 -> 72 GiB of 80; 10 GiB (10240 tokens) left for a's KV.
    return device(a, b, memory_gb=80.0), a


def test_memory_fits_exactly() -> None:
    dev, a = _memory_device()
    decision = shadow_validate(dev, a, req("n", input_tokens=10240, ttft_slo_s=60), 0.0, EXACT)
    assert decision.admitted
    assert decision.kv_demand_bytes == 10240 * 1024 * 1024


def test_memory_exceeded_by_one_block() -> None:
    dev, a = _memory_device()
    decision = shadow_validate(dev, a, req("n", input_tokens=10241, ttft_slo_s=60), 0.0, EXACT)
    assert (decision.admitted, decision.reason) == (False, AdmissionReason.MEMORY)
    ignored = shadow_validate(
        dev,
        a,
        req("n", input_tokens=10241, ttft_slo_s=60),
        0.0,
        EXACT,
        ignore=frozenset({Check.MEMORY}),
    )
    assert ignored.admitted


def test_memory_uses_lmin_floor() -> None:
    dev, a = _memory_device()
    decision = shadow_validate(dev, a, req("n", input_tokens=10), 0.0, EXACT)
    assert decision.kv_demand_bytes == 4096 * 1024 * 1024  # L_min = 4096 tokens


def test_memory_cpu_fixed_pool() -> None:
    cpu = instance("c", (), node_id="cpu0", pool_gb=8.0)
    dev = device(cpu, node_id="cpu0", kind=DeviceKind.CPU, memory_gb=256.0)
    fits = shadow_validate(dev, cpu, req("n", input_tokens=8192, ttft_slo_s=60), 0.0, EXACT)
    over = shadow_validate(dev, cpu, req("n", input_tokens=8193, ttft_slo_s=60), 0.0, EXACT)
    assert fits.admitted
    assert over.reason is AdmissionReason.MEMORY


def test_decode_budget() -> None:
    busy = instance("a", (req("1"),), perf=flat_perf(100.0))  # slice 0.4
    other = instance("b", (req("2"),), perf=flat_perf(100.0))  # slice 0.4
    fits = instance("c", (), perf=flat_perf(50.0))  # 0.2 with the request: Σ = 1.0
    too_big = instance("c", (), perf=flat_perf(60.0))  # 0.24: Σ = 1.04
    new = req("n", ttft_slo_s=60.0)
    assert shadow_validate(device(busy, other, fits), fits, new, 0.0, EXACT).admitted
    decision = shadow_validate(device(busy, other, too_big), too_big, new, 0.0, EXACT)
    assert decision.reason is AdmissionReason.DECODE_BUDGET
    assert shadow_validate(
        device(busy, other, too_big),
        too_big,
        new,
        0.0,
        EXACT,
        ignore=frozenset({Check.DECODE_BUDGET}),
    ).admitted


def _prefill_pair(ttft_new: float, ttft_old: float = 1.0) -> tuple:
    # a waits to prefill 600 tokens (0.6 s) due at 0 + ttft_old; the newcomer joins b.
    a = instance(
        "a",
        (req("old", input_tokens=600, ttft_slo_s=ttft_old),),
        prefill=("old",),
        perf=flat_perf(1.0),
    )
    b = instance("b", (), perf=flat_perf(1.0))
    return device(a, b), b, req("new", input_tokens=500, ttft_slo_s=ttft_new)


def test_prefill_deadline_newcomer_first_pushes_later_one_past_due() -> None:
    dev, b, new = _prefill_pair(ttft_new=0.8)
    # EDF: new (0.5 s, due 0.8) then old (ends 1.1 > 1.0): a deadline after the new one's
    # position is missed.
    decision = shadow_validate(dev, b, new, 0.0, EXACT)
    assert decision.reason is AdmissionReason.PREFILL_DEADLINE


def test_prefill_deadline_met_after_earlier_one() -> None:
    dev, b, new = _prefill_pair(ttft_new=1.2)
    # old ends 0.6 ≤ 1.0, new ends 1.1 ≤ 1.2.
    assert shadow_validate(dev, b, new, 0.0, EXACT).admitted


def test_misses_before_the_new_position_are_not_its_fault() -> None:
    dev, b, new = _prefill_pair(ttft_new=2.0, ttft_old=0.3)
    assert shadow_validate(dev, b, new, 0.0, EXACT).admitted


def test_prefill_starts_when_the_device_is_free() -> None:
    b = instance("b", (), perf=flat_perf(1.0))
    new = req("new", input_tokens=500, ttft_slo_s=0.8)
    assert shadow_validate(device(b), b, new, 0.0, EXACT).admitted
    busy = device(b, busy_until_s=0.5)  # 0.5 + 0.5 > 0.8
    assert shadow_validate(busy, b, new, 0.0, EXACT).reason is AdmissionReason.PREFILL_DEADLINE


def test_loading_instances_are_left_out_of_the_prefill_simulation() -> None:
    a = instance(
        "a",
        (req("old", input_tokens=600),),
        prefill=("old",),
        perf=flat_perf(1.0),
        phase=InstancePhase.LOADING,
    )
    b = instance("b", (), perf=flat_perf(1.0))
    assert shadow_validate(
        device(a, b), b, req("new", input_tokens=500, ttft_slo_s=0.8), 0.0, EXACT
    ).admitted


def test_margin_tightens_deadlines() -> None:
    b = instance("b", (), perf=flat_perf(1.0))
    new = req("new", input_tokens=500, ttft_slo_s=0.52)
    assert shadow_validate(device(b), b, new, 0.0, EXACT).admitted
    tight = PolicyConfig(slo_margin=0.95)  # due at 0.494 < 0.5
    assert not shadow_validate(device(b), b, new, 0.0, tight).admitted


def test_releasing_instance_takes_nothing() -> None:
    a = instance("a", (), phase=InstancePhase.RELEASING)
    decision = shadow_validate(device(a), a, req("n"), 0.0, EXACT)
    assert decision.reason is AdmissionReason.NOT_ACCEPTING


def test_prefill_on_leftover_extension() -> None:
    # A decoding neighbour holds half the device (slice 0.5): prefills run at half speed.
    busy = instance("a", (req("old", output_tokens=3, ttft_slo_s=60),), perf=flat_perf(125.0))
    b = instance("b", (), perf=flat_perf(1.0))
    new = req("new", input_tokens=300, ttft_slo_s=0.5)
    assert shadow_validate(device(busy, b), b, new, 0.0, EXACT).admitted  # 0.3 s ≤ 0.5 s
    leftover = PolicyConfig(slo_margin=1.0, prefill_on_leftover=True)
    decision = shadow_validate(device(busy, b), b, new, 0.0, leftover)  # 0.3 / 0.5 = 0.6 s
    assert decision.reason is AdmissionReason.PREFILL_DEADLINE
    relaxed = req("new", input_tokens=300, ttft_slo_s=0.7)
    assert shadow_validate(device(busy, b), b, relaxed, 0.0, leftover).admitted


def test_policy_config_is_validated() -> None:
    import pytest

    with pytest.raises(ValueError):
        PolicyConfig(slo_margin=0.0)
    with pytest.raises(ValueError):
        PolicyConfig(watermark=2.0)
