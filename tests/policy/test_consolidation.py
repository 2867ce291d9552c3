"""Proactive preemption victim choice on GPU and CPU, and the drain plan (DESIGN.md §4)."""

from __future__ import annotations

from slinfer.policy.config import PolicyConfig
from slinfer.policy.model_spec import GIB
from slinfer.policy.preemption import (
    PreemptKind,
    choose_victim,
    decode_victim,
    drain_plan,
    memory_gap_bytes,
    memory_victim,
    preemption_plan,
)
from slinfer.policy.shadow import ShadowInstance
from slinfer.policy.types import DeviceKind, InstancePhase
from tests.policy.factories import device, flat_perf, instance, req

EXACT = PolicyConfig(slo_margin=1.0)


def _reqs(prefix: str, n: int) -> tuple:
    return tuple(req(f"{prefix}{i}", input_tokens=100, ttft_slo_s=60) for i in range(n))


def _gpu_case(phase_small: InstancePhase = InstancePhase.READY):
    # 80 GiB; target t holds 10 GiB weights + 4 GiB KV, batch 3 (+1 new).
    target = instance("t", _reqs("t", 3), kv_gb=4.0)
    small = instance("s", _reqs("s", 1), kv_gb=4.0, phase=phase_small)  # 14 GiB footprint
    tiny = instance("x", (), kv_gb=1.0)  # idle, 11 GiB footprint
    big = instance("b", _reqs("b", 8), kv_gb=20.0)  # more work than the target: protected
    filler = instance("f", _reqs("f", 4), kv_gb=7.0)  # 17 GiB, batch 4 = target's
    dev = device(target, small, tiny, big, filler, memory_gb=94.0)
    return dev, target


def test_memory_gap() -> None:
    dev, target = _gpu_case()
    shadow = ShadowInstance(target, req("new", input_tokens=20_000, ttft_slo_s=60))
    # planned 14+14+11+30+17 = 86 of 94 GiB; the target's KV goes from 4 GiB to its demand,
    # 3·100 + 20_000 = 20_300 tokens, 20_304 in 16-token blocks, at 1 MiB each.
    gap = memory_gap_bytes(dev, shadow, EXACT)
    assert gap == 86 * GIB - 4 * GIB + 20_304 * 2**20 - 94 * GIB


def test_gpu_victim_is_the_smallest_batch_that_covers_the_gap() -> None:
    dev, target = _gpu_case()
    shadow = ShadowInstance(target, req("new", input_tokens=20_000, ttft_slo_s=60))
    victim, gap = memory_victim(dev, shadow, EXACT)
    assert 7 * GIB < gap < 8 * GIB
    # tiny (batch 0, 11 GiB) covers the gap and has the smallest batch.
    assert victim is not None and victim.instance_id == "x"
    assert choose_victim(dev, shadow, EXACT) == "x"


def test_gpu_victim_skips_too_small_footprints() -> None:
    dev, target = _gpu_case()
    # demand 24_304 tokens ≈ 23.7 GiB: gap ≈ 11.7 GiB, more than tiny's 11 GiB.
    shadow = ShadowInstance(target, req("new", input_tokens=24_000, ttft_slo_s=60))
    victim, gap = memory_victim(dev, shadow, EXACT)
    assert 11 * GIB < gap <= 14 * GIB
    assert victim is not None and victim.instance_id == "s"


def test_gpu_never_evicts_loading_or_busier_instances() -> None:
    dev, target = _gpu_case(phase_small=InstancePhase.LOADING)
    shadow = ShadowInstance(target, req("new", input_tokens=24_000, ttft_slo_s=60))
    victim, _ = memory_victim(dev, shadow, EXACT)
    # s is loading, x too small, b has batch 8 > 4: only f (batch 4 = target's) qualifies.
    assert victim is not None and victim.instance_id == "f"


def test_cpu_victim_by_decode_slice() -> None:
    cpu = {"node_id": "cpu0"}
    target = instance("t", _reqs("t", 3), perf=flat_perf(100.0), **cpu)  # 0.4
    light = instance("l", _reqs("l", 1), perf=flat_perf(25.0), **cpu)  # 0.1
    medium = instance("m", _reqs("m", 2), perf=flat_perf(50.0), **cpu)  # 0.2
    heavy = instance("h", _reqs("h", 5), perf=flat_perf(100.0), **cpu)  # 0.4, batch 5 > 4
    dev = device(target, light, medium, heavy, node_id="cpu0", kind=DeviceKind.CPU)
    shadow = ShadowInstance(target, req("new", ttft_slo_s=60))
    victim, gap = decode_victim(dev, shadow, EXACT)
    # Σ = 0.4 + 0.1 + 0.2 + 0.4 = 1.1: the gap is 0.1; l (batch 1) covers it exactly.
    assert abs(gap - 0.1) < 1e-9
    assert victim is not None and victim.instance_id == "l"
    heavier = instance("t", _reqs("t", 3), perf=flat_perf(120.0), **cpu)  # 0.48: gap 0.18
    dev2 = device(heavier, light, medium, heavy, node_id="cpu0", kind=DeviceKind.CPU)
    victim2, _ = decode_victim(dev2, ShadowInstance(heavier, req("new", ttft_slo_s=60)), EXACT)
    assert victim2 is not None and victim2.instance_id == "m"


def test_cpu_no_victim_when_target_alone_exceeds_the_device() -> None:
    target = instance("t", _reqs("t", 1), perf=flat_perf(300.0), node_id="cpu0")  # 1.2
    other = instance("o", _reqs("o", 1), perf=flat_perf(25.0), node_id="cpu0")
    dev = device(target, other, node_id="cpu0", kind=DeviceKind.CPU)
    victim, _ = decode_victim(dev, ShadowInstance(target, req("n", ttft_slo_s=60)), EXACT)
    assert victim is None


def test_preemption_plan_ignores_exactly_one_constraint() -> None:
    dev, target = _gpu_case()
    new = req("new", input_tokens=20_000, ttft_slo_s=60)
    plan = preemption_plan({dev.node_id: dev}, [target], new, 0.0, EXACT)
    assert plan is not None
    assert (plan.target_instance_id, plan.victim_instance_id, plan.kind) == (
        "t",
        "x",
        PreemptKind.MEMORY,
    )


def test_drain_plan_moves_the_least_loaded_node() -> None:
    a = instance("a", _reqs("a", 1), perf=flat_perf(25.0), node_id="cpu0")  # 0.1
    b = instance("b", _reqs("b", 1), perf=flat_perf(100.0), node_id="cpu1")  # 0.4
    c = instance("c", _reqs("c", 1), perf=flat_perf(150.0), node_id="cpu2")  # 0.6
    devs = [device(x, node_id=x.node_id, kind=DeviceKind.CPU, memory_gb=256) for x in (a, b, c)]
    plan = drain_plan(devs, EXACT)
    assert plan is not None and plan.node_id == "cpu0"
    assert [(m.instance_id, m.target_node_id) for m in plan.moves] == [("a", "cpu2")]
