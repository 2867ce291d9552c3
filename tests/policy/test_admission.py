"""Admission (DESIGN.md §2): each check from hand-computed cases, both rules.

Model in these tests: 1 MiB of KV per token (1024 tokens per GiB), 10 GiB of weights,
prefill 1 ms per input token, flat decode time. EXACT: margin 1, so deadlines are the SLOs.
"""

from __future__ import annotations

import pytest

from slinfer.policy.admission import AdmissionReason, shadow_validate, validate_group
from slinfer.policy.config import Admission, PolicyConfig
from slinfer.policy.types import DeviceKind, InstancePhase
from tests.policy.factories import device, flat_perf, instance, req

EXACT = PolicyConfig(slo_margin=1.0)
PAPER = PolicyConfig(slo_margin=1.0, admission=Admission.PAPER)


def _memory_device(kv_a_gb: float = 2.0) -> tuple:
    a = instance("a", (), kv_gb=kv_a_gb)
    b = instance("b", (req("old", output_tokens=5, ttft_slo_s=60),), kv_gb=50.0)
    # planned: a 10 + 2, b 10 + 50 -> 72 GiB of 80; 10 GiB (10240 tokens) left for a's KV.
    return device(a, b, memory_gb=80.0), a


@pytest.mark.parametrize("config", [EXACT, PAPER], ids=["shadow", "paper"])
def test_memory_fits_exactly_and_one_block_more_does_not(config: PolicyConfig) -> None:
    dev, a = _memory_device()
    fits = shadow_validate(dev, a, req("n", input_tokens=10240, ttft_slo_s=60), 0.0, config)
    assert fits.admitted
    assert fits.kv_demand_bytes == 10240 * 1024 * 1024
    over = shadow_validate(dev, a, req("n", input_tokens=10241, ttft_slo_s=60), 0.0, config)
    assert (over.admitted, over.reason) == (False, AdmissionReason.MEMORY)


def test_memory_uses_lmin_floor() -> None:
    dev, a = _memory_device()
    decision = shadow_validate(dev, a, req("n", input_tokens=10, ttft_slo_s=60), 0.0, EXACT)
    assert decision.kv_demand_bytes == 4096 * 1024 * 1024  # L_min = 4096 tokens


def test_memory_cpu_fixed_pool() -> None:
    cpu = instance("c", (), node_id="cpu0", pool_gb=8.0)
    dev = device(cpu, node_id="cpu0", kind=DeviceKind.CPU, memory_gb=256.0)
    fits = shadow_validate(dev, cpu, req("n", input_tokens=8192, ttft_slo_s=60), 0.0, EXACT)
    over = shadow_validate(dev, cpu, req("n", input_tokens=8193, ttft_slo_s=60), 0.0, EXACT)
    assert fits.admitted
    assert over.reason is AdmissionReason.MEMORY


# -- (2) steady state: Σ slices + ρ ≤ 1 -------------------------------------------------------


def _budget_device(decode_ms_c: float, prefill_share: float = 0.0) -> tuple:
    busy = instance("a", (req("1", ttft_slo_s=60),), perf=flat_perf(100.0))  # slice 0.4
    other = instance("b", (req("2", ttft_slo_s=60),), perf=flat_perf(100.0))  # slice 0.4
    c = instance("c", (), perf=flat_perf(decode_ms_c))
    return device(busy, other, c, prefill_share=prefill_share), c


def test_steady_state_counts_slices_and_the_prefill_share() -> None:
    new = req("n", ttft_slo_s=60.0)
    dev, c = _budget_device(50.0)  # 0.2 with the request: Σ = 1.0 exactly
    assert shadow_validate(dev, c, new, 0.0, EXACT).admitted
    dev, c = _budget_device(60.0)  # Σ = 1.04
    assert shadow_validate(dev, c, new, 0.0, EXACT).reason is AdmissionReason.STEADY_STATE
    # Decode alone fits (0.9) but prefills took 20 % of the device lately: 1.1 > 1.
    dev, c = _budget_device(25.0, prefill_share=0.2)
    assert shadow_validate(dev, c, new, 0.0, EXACT).reason is AdmissionReason.STEADY_STATE
    dev, c = _budget_device(25.0, prefill_share=0.1)  # exactly 1.0
    assert shadow_validate(dev, c, new, 0.0, EXACT).admitted


def test_paper_decode_budget_ignores_the_prefill_share() -> None:
    dev, c = _budget_device(25.0, prefill_share=0.2)
    assert shadow_validate(dev, c, req("n", ttft_slo_s=60.0), 0.0, PAPER).admitted
    dev, c = _budget_device(60.0)
    decision = shadow_validate(dev, c, req("n", ttft_slo_s=60.0), 0.0, PAPER)
    assert decision.reason is AdmissionReason.DECODE_BUDGET


# -- (3) the shadow run ---------------------------------------------------------------------


def _saturated(prompt: int, ttft: float) -> tuple:
    """A CPU socket (one iteration per grant): four decoders at 50 ms a token each (Σ slices
    0.8), each due 0.25 s from now, and an idle instance that would take a request with a
    `prompt`-token prefill (1 ms a token)."""
    decoders = [
        instance(f"d{i}", (req(f"r{i}", arrival_s=-1.0 + 0.01 * i, ttft_slo_s=1.25),))
        for i in range(4)
    ]
    b = instance("b", (), perf=flat_perf(1.0))
    cpu = device(*decoders, b, kind=DeviceKind.CPU)
    return cpu, b, req("new", input_tokens=prompt, ttft_slo_s=ttft)


def test_shadow_run_refuses_a_prefill_the_busy_device_cannot_fit() -> None:
    # Alone, the new request would meet its TTFT (1 s of prefill, due in 2 s), and the steady
    # state holds (0.8 + 0.004 ≤ 1); but on a device 80 % busy with four decoders due every
    # 0.25 s, no 1 s gap opens before 2 s: whichever goes first, a token is late.
    dev, b, new = _saturated(prompt=1000, ttft=2.0)
    decision = shadow_validate(dev, b, new, 0.0, EXACT)
    assert decision.reason is AdmissionReason.SHADOW_RUN
    # The first design checks prefills only: it admits the same request.
    assert shadow_validate(dev, b, new, 0.0, PAPER).admitted


def test_shadow_run_admits_a_short_prefill_between_decodes() -> None:
    # 40 ms of prefill fits in the 50 ms the four decoders leave in every 250 ms.
    dev, b, new = _saturated(prompt=40, ttft=2.0)
    assert shadow_validate(dev, b, new, 0.0, EXACT).admitted


def test_shadow_run_starts_when_the_device_is_free() -> None:
    b = instance("b", (), perf=flat_perf(1.0))
    new = req("new", input_tokens=500, ttft_slo_s=0.8)
    assert shadow_validate(device(b), b, new, 0.0, EXACT).admitted
    busy = device(b, busy_until_s=0.5)  # 0.5 + 0.5 > 0.8
    assert shadow_validate(busy, b, new, 0.0, EXACT).reason is AdmissionReason.SHADOW_RUN


def test_margin_tightens_deadlines() -> None:
    b = instance("b", (), perf=flat_perf(1.0))
    new = req("new", input_tokens=500, ttft_slo_s=0.52)
    assert shadow_validate(device(b), b, new, 0.0, EXACT).admitted
    tight = PolicyConfig(slo_margin=0.95)  # due at 0.494 < 0.5
    assert not shadow_validate(device(b), b, new, 0.0, tight).admitted


def test_a_request_already_late_is_held_to_keeping_pace() -> None:
    # "late" is 0.3 s past its next token's deadline when the decision is taken. It does not
    # block admission: from now on it must keep pace (a token within every 0.25 s)...
    late = instance("l", (req("late", arrival_s=-1.3, ttft_slo_s=1.0),), perf=flat_perf(50.0))
    b = instance("b", (), perf=flat_perf(1.0))
    new = req("n", input_tokens=10, ttft_slo_s=1.0)
    assert shadow_validate(device(late, b), b, new, 0.0, EXACT).admitted
    # ...and a device that needs 0.24 s per token of it has no room left for the new
    # request's first token in time: it takes nothing more.
    slow = instance("l", (req("late", arrival_s=-1.3, ttft_slo_s=1.0),), perf=flat_perf(240.0))
    decision = shadow_validate(device(slow, b), b, new, 0.0, EXACT)
    assert decision.reason is AdmissionReason.SHADOW_RUN


def test_a_loading_instance_joins_at_its_ready_time() -> None:
    b = instance("b", (), perf=flat_perf(1.0), phase=InstancePhase.LOADING, ready_at_s=2.0)
    new = req("new", input_tokens=500, ttft_slo_s=0.8)
    # A fresh request's wait for the load is excused (as the paper counts TTFT)...
    assert shadow_validate(device(b), b, new, 0.0, EXACT).admitted
    # ...a moved one's is not: the load counts against its deadline (DESIGN.md §4).
    moved = validate_group(device(b), b, (new,), 0.0, EXACT, excuse_load=False)
    assert moved.reason is AdmissionReason.SHADOW_RUN


def test_the_window_ends_the_run_after_k_tpots() -> None:
    # A request hours ahead of schedule is not simulated until it is due.
    ahead = instance("a", (req("far", arrival_s=0.0, output_tokens=40_000, ttft_slo_s=1.0),))
    b = instance("b", (), perf=flat_perf(1.0))
    dev = device(ahead, b)
    from slinfer.policy.shadow_run import shadow_run

    outcome = shadow_run(dev, b, (req("n", input_tokens=100, ttft_slo_s=1.0),), 0.0, EXACT)
    assert outcome.ok and outcome.iterations <= EXACT.shadow_tokens + 1


def test_releasing_instance_takes_nothing() -> None:
    a = instance("a", (), phase=InstancePhase.RELEASING)
    decision = shadow_validate(device(a), a, req("n"), 0.0, EXACT)
    assert decision.reason is AdmissionReason.NOT_ACCEPTING


# -- the first design's prefill-deadline check (`--admission paper`) -----------------------


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


def test_paper_newcomer_first_pushes_a_later_prefill_past_due() -> None:
    dev, b, new = _prefill_pair(ttft_new=0.8)
    # EDF: new (0.5 s, due 0.8) then old (ends 1.1 > 1.0): missed after the new position.
    assert shadow_validate(dev, b, new, 0.0, PAPER).reason is AdmissionReason.PREFILL_DEADLINE
    dev, b, new = _prefill_pair(ttft_new=1.2)  # old ends 0.6 ≤ 1.0, new 1.1 ≤ 1.2
    assert shadow_validate(dev, b, new, 0.0, PAPER).admitted
    dev, b, new = _prefill_pair(ttft_new=2.0, ttft_old=0.3)  # a miss before it is not its own
    assert shadow_validate(dev, b, new, 0.0, PAPER).admitted


def test_paper_keys_an_instance_on_all_its_requests() -> None:
    # The artifact's rule: b's prefill is due when b's *decoder* next is (0.3 s), so a 0.5 s
    # prefill there is refused although the new request itself has 2 s.
    decoder = req("dec", arrival_s=-0.95, output_tokens=1, ttft_slo_s=1.0)
    b = instance("b", (decoder,), perf=flat_perf(1.0))
    new = req("new", input_tokens=500, ttft_slo_s=2.0)
    decision = shadow_validate(device(b), b, new, 0.0, PAPER)
    assert decision.reason is AdmissionReason.PREFILL_DEADLINE


def test_paper_leaves_loading_instances_out() -> None:
    a = instance(
        "a",
        (req("old", input_tokens=600),),
        prefill=("old",),
        perf=flat_perf(1.0),
        phase=InstancePhase.LOADING,
    )
    b = instance("b", (), perf=flat_perf(1.0))
    new = req("new", input_tokens=500, ttft_slo_s=0.8)
    assert shadow_validate(device(a, b), b, new, 0.0, PAPER).admitted


def test_policy_config_is_validated() -> None:
    for bad in (
        {"slo_margin": 0.0},
        {"watermark": 2.0},
        {"shadow_tokens": 0},
        {"prefill_window_s": 0.0},
        {"pack_below": 1.5},
        {"queue_grace_s": -1.0},
    ):
        with pytest.raises(ValueError):
            PolicyConfig(**bad)  # type: ignore[arg-type]
