"""Busiest-instance routing, most-loaded placement, baselines, keep-alive (DESIGN.md §4, §6)."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest

from slinfer.policy.baselines import (
    accepts_instance,
    device_sized_kv_bytes,
    throttle_wakeup_s,
    throttles,
)
from slinfer.policy.config import PolicyConfig
from slinfer.policy.dispatch import DispatchKind, decide
from slinfer.policy.keep_alive import KeepAlive, reclaim_due
from slinfer.policy.model_spec import GIB, ConcurrencyCaps
from slinfer.policy.placement import place
from slinfer.policy.routing import route
from slinfer.policy.systems import SystemName, system_spec
from slinfer.policy.types import DeviceKind, InstancePhase
from slinfer.policy.view import DispatchView
from tests.policy.factories import device, flat_perf, instance, req, spec

EXACT = PolicyConfig(slo_margin=1.0)
SLINFER = system_spec(SystemName.SLINFER)


def _reqs(prefix: str, n: int) -> tuple:
    return tuple(req(f"{prefix}{i}", ttft_slo_s=60) for i in range(n))


def _view(devices, candidates=(), model=None, cpu_perf=None, rr=0) -> DispatchView:
    perf = {(DeviceKind.GPU, "gpu"): flat_perf(20.0)}
    if cpu_perf is not None:
        perf[(DeviceKind.CPU, "cpu")] = cpu_perf
    return DispatchView(
        devices=MappingProxyType({d.node_id: d for d in devices}),
        candidates=tuple(candidates),
        model=model or spec(),
        perf_by_label=MappingProxyType(perf),
        rr_cursor=rr,
        load_free_kinds=frozenset({DeviceKind.CPU}),
        model_id="m0",
    )


def _three_instances(full_node: str | None = None):
    batches = {"a": 1, "b": 5, "c": 3}
    insts, devs = [], []
    for k, (iid, n) in enumerate(batches.items()):
        node = f"gpu{k}"
        inst = instance(iid, _reqs(iid, n), node_id=node, kv_gb=10.0)
        insts.append(inst)
        hog = instance(f"hog{k}", _reqs(f"h{k}", 1), node_id=node, perf=flat_perf(240.0))
        devs.append(
            device(inst, hog, node_id=node) if node == full_node else device(inst, node_id=node)
        )
    return insts, devs


def test_route_to_busiest_admissible_instance() -> None:
    insts, devs = _three_instances()
    assert route(_view(devs, insts), req("n"), 0.0, SLINFER, EXACT).instance_id == "b"


def test_route_skips_busiest_when_it_cannot_admit() -> None:
    insts, devs = _three_instances(full_node="gpu1")  # b's device has no decode budget left
    assert route(_view(devs, insts), req("n"), 0.0, SLINFER, EXACT).instance_id == "c"


def test_route_without_defrag_balances_load() -> None:
    insts, devs = _three_instances()
    balanced = system_spec(SystemName.SLINFER_NO_DEFRAG)
    assert route(_view(devs, insts), req("n"), 0.0, balanced, EXACT).instance_id == "a"


def test_baseline_round_robin_with_cap() -> None:
    model = dataclasses.replace(
        spec(), caps=MappingProxyType({(DeviceKind.GPU, "gpu"): ConcurrencyCaps(2, 1)})
    )
    full = instance("a", _reqs("a", 2), node_id="gpu0", model=model)
    free = instance("b", (), node_id="gpu1", model=model)
    view = _view(
        [device(full, node_id="gpu0"), device(free, node_id="gpu1")],
        [full, free],
        model=model,
        rr=0,
    )
    decision = route(view, req("n"), 0.0, system_spec(SystemName.SLLM), EXACT)
    assert (decision.instance_id, decision.rr_cursor) == ("b", 2)


def _gpu_nodes():
    g0 = device(node_id="gpu0")
    g1 = device(instance("x", _reqs("x", 1), node_id="gpu1", kv_gb=20.0), node_id="gpu1")
    g2 = device(instance("y", _reqs("y", 1), node_id="gpu2", kv_gb=40.0), node_id="gpu2")
    return [g0, g1, g2]


def test_place_on_most_loaded_node_empty_last() -> None:
    decision = place(_view(_gpu_nodes()), req("n"), 0.0, SLINFER, EXACT)
    assert decision.node_id == "gpu2"
    # first KV allocation: demand (L_min 4096 tokens = 4 GiB here) · 1.25
    assert decision.kv_bytes == 5 * GIB


def test_place_without_defrag_on_least_loaded_used_node() -> None:
    balanced = system_spec(SystemName.SLINFER_NO_DEFRAG)
    assert place(_view(_gpu_nodes()), req("n"), 0.0, balanced, EXACT).node_id == "gpu1"


def test_place_skips_full_node() -> None:
    nodes = _gpu_nodes()
    nodes[2] = dataclasses.replace(nodes[2], memory_bytes=55 * GIB)  # 50 planned + 10 > 55
    assert place(_view(nodes), req("n"), 0.0, SLINFER, EXACT).node_id == "gpu1"


def test_no_second_instance_of_a_model_on_its_device() -> None:
    """A device that holds an instance of the model (ready or loading) gets no twin: the
    request joins the resident one or goes elsewhere; baselines keep their own rules."""
    nodes = _gpu_nodes()
    resident = instance("m0-a", node_id="gpu2", phase=InstancePhase.LOADING, ready_at_s=5.0)
    nodes[2] = device(*nodes[2].instances, resident, node_id="gpu2")
    placed = place(_view(nodes, candidates=[resident]), req("n"), 0.0, SLINFER, EXACT)
    assert placed.node_id is not None and placed.node_id != "gpu2"
    leaving = dataclasses.replace(resident, phase=InstancePhase.RELEASING)
    nodes[2] = device(*_gpu_nodes()[2].instances, leaving, node_id="gpu2")
    placed = place(_view(nodes, candidates=[leaving]), req("n"), 0.0, SLINFER, EXACT)
    assert placed.node_id == "gpu2", "an instance on its way out does not hold the device"


def test_cpu_pool_first_when_it_meets_the_slo() -> None:
    cpu = device(node_id="cpu0", kind=DeviceKind.CPU, memory_gb=256.0)
    nodes = [*_gpu_nodes(), cpu]
    fast_cpu = flat_perf(decode_ms=50.0, prefill_ms_per_token=1.0)
    decision = place(
        _view(nodes, cpu_perf=fast_cpu), req("n", input_tokens=500), 0.0, SLINFER, EXACT
    )
    assert decision.node_id == "cpu0"
    assert decision.kv_bytes == 8 * GIB  # the fixed CPU pool
    slow_cpu = flat_perf(decode_ms=50.0, prefill_ms_per_token=10.0)  # 5 s > 1 s TTFT
    strict = req("n", input_tokens=500, ttft_slo_s=1.0)
    assert place(_view(nodes, cpu_perf=slow_cpu), strict, 0.0, SLINFER, EXACT).node_id == "gpu2"
    gpu_only = system_spec(SystemName.SLINFER_GPU)
    assert place(_view(nodes, cpu_perf=fast_cpu), req("n"), 0.0, gpu_only, EXACT).node_id == "gpu2"


def test_baseline_placement_rules() -> None:
    sllm, shared = system_spec(SystemName.SLLM), system_spec(SystemName.SLLM_C_S)
    thirteen = spec("llama-2-13b", weights_gb=24.3)
    one = device(instance("x", (), node_id="gpu0"), node_id="gpu0")
    assert not accepts_instance(one, spec(), sllm)
    assert accepts_instance(one, spec(), shared)
    two = device(instance("x", ()), instance("y", ()))
    assert not accepts_instance(two, spec(), shared)
    cpu_one = device(instance("x", (), node_id="cpu0"), node_id="cpu0", kind=DeviceKind.CPU)
    assert not accepts_instance(cpu_one, thirteen, shared)
    assert accepts_instance(cpu_one, spec(), shared)
    nodes = _gpu_nodes()
    decision = place(_view(nodes), req("n"), 0.0, sllm, EXACT)
    assert decision.node_id == "gpu0"
    assert decision.kv_bytes == 80 * GIB - 10 * GIB


def test_device_sized_kv() -> None:
    g = device(node_id="gpu0", memory_gb=78.0)
    model = spec(weights_gb=12.0)
    assert device_sized_kv_bytes(g, model, system_spec(SystemName.SLLM)) == 66 * GIB
    assert device_sized_kv_bytes(g, model, system_spec(SystemName.SLLM_C_S)) == 27 * GIB


def test_static_sharing_throttle() -> None:
    assert throttle_wakeup_s(10.0, 0.3, 2) == pytest.approx(10.6)
    shared = system_spec(SystemName.SLLM_C_S)
    assert throttles(shared, DeviceKind.GPU) and not throttles(shared, DeviceKind.CPU)
    assert not throttles(system_spec(SystemName.SLLM_C), DeviceKind.GPU)


def test_dispatch_preempts_then_places() -> None:
    # The only instance of the model is on a full GPU beside an idle instance of another model.
    target = instance("t", _reqs("t", 2), kv_gb=4.0)
    idle = instance("x", (), kv_gb=4.0)
    dev = device(target, idle, memory_gb=29.0)  # 28 planned; demand would need ~5+ more
    view = _view([dev], [target])
    big = req("n", input_tokens=6000, ttft_slo_s=60)
    decision = decide(view, big, 0.0, SLINFER, EXACT)
    assert (decision.kind, decision.instance_id, decision.victim_id) == (
        DispatchKind.PREEMPT,
        "t",
        "x",
    )
    assert decision.kv_bytes is not None and decision.kv_bytes > 4 * GIB
    no_preempt = system_spec(SystemName.SLINFER_NO_DEFRAG)
    assert decide(view, big, 0.0, no_preempt, EXACT).kind is DispatchKind.NONE


def test_keep_alive_reclaim() -> None:
    keep = KeepAlive(gpu_s=1.0, cpu_s=0.0)
    gpu, cpu = keep.seconds(DeviceKind.GPU), keep.seconds(DeviceKind.CPU)
    ready = InstancePhase.READY
    assert not reclaim_due(0, ready, 10.0, gpu, 10.5)
    assert reclaim_due(0, ready, 10.0, gpu, 11.0)
    assert reclaim_due(0, ready, 10.0, cpu, 10.0)
    assert not reclaim_due(1, ready, 10.0, gpu, 99.0)  # busy
    assert not reclaim_due(0, InstancePhase.LOADING, 10.0, gpu, 99.0)
    assert not reclaim_due(0, ready, None, gpu, 99.0)  # never idle yet


def test_system_registry() -> None:
    from slinfer.policy.errors import UnknownSystem

    assert system_spec("sllm+c+s").shares == 2
    assert system_spec(SystemName.SLINFER).preempt
    assert not system_spec("slinfer-no-defrag").defrag
    assert not system_spec("slinfer-gpu").use_cpu
    with pytest.raises(UnknownSystem):
        system_spec("vllm")
