"""Preemption that pays and packing (DESIGN.md §4), from hand-built cluster views.

Model in these tests: 10 GiB of weights, 1 MiB of KV per token, prefill 1 ms per token,
decode 50 ms; GPUs of 40 GiB. EXACT: margin 1, so deadlines are the SLOs.
"""

from __future__ import annotations

from slinfer.policy.config import PolicyConfig
from slinfer.policy.model_spec import GIB
from slinfer.policy.packing import PackWatch, node_load, pack_plan
from slinfer.policy.perf_model import PerfModel
from slinfer.policy.preemption import Destination, PreemptKind, preemption_plan
from slinfer.policy.types import DeviceKind, InstancePhase
from tests.policy.factories import device, flat_perf, instance, req, spec

EXACT = PolicyConfig(slo_margin=1.0)
A, B = spec(name="model-a"), spec(name="model-b")
NEW = req("new", input_tokens=20_000, ttft_slo_s=60.0)  # headroom 60 s at t = 0


def _ahead(rid: str, output: int = 300) -> object:
    """A request far ahead of its schedule: its next token is due at 1 + 0.25·output s."""
    return req(rid, input_tokens=100, output_tokens=output, ttft_slo_s=1.0)


def _cluster(victim_requests: tuple = (), *, phase=InstancePhase.READY, moved_at=None, gpu1=True):
    """gpu0 holds the target t (model A) and a victim v (model B); the new request's KV does
    not fit beside v. gpu1 holds an idle resident instance of model B, or nothing."""
    t = instance("t", (req("t0", ttft_slo_s=60.0),), model=A, kv_gb=4.0)
    v = instance("v", victim_requests, model=B, kv_gb=4.0, phase=phase, moved_at_s=moved_at)
    gpu0 = device(t, v, memory_gb=40.0)
    devices = {"gpu0": gpu0}
    if gpu1:
        other = instance("w", (), model=B, node_id="gpu1", kv_gb=4.0)
        devices["gpu1"] = device(other, node_id="gpu1", memory_gb=40.0)
    return devices, t


def test_preempts_a_victim_whose_requests_have_a_resident_destination() -> None:
    devices, t = _cluster((_ahead("v0"),))
    plan = preemption_plan(devices, [t], NEW, 0.0, EXACT)
    assert plan is not None
    assert (plan.target_instance_id, plan.victim_instance_id, plan.kind) == (
        "t",
        "v",
        PreemptKind.MEMORY,
    )
    assert plan.destination == Destination("gpu1", "w")


def test_an_idle_victim_needs_no_destination() -> None:
    devices, t = _cluster((), gpu1=False)
    plan = preemption_plan(devices, [t], NEW, 0.0, EXACT)
    assert plan is not None and plan.victim_instance_id == "v" and plan.destination is None


def test_no_preemption_when_the_move_does_not_pay() -> None:
    # Nowhere for v's request to go: no other node.
    devices, t = _cluster((_ahead("v0"),), gpu1=False)
    assert preemption_plan(devices, [t], NEW, 0.0, EXACT) is None


def test_never_evicts_more_urgent_work() -> None:
    # v's request is due in 26 s, sooner than the new request's 60 s: it stays.
    devices, t = _cluster((_ahead("v0", output=100),))
    assert preemption_plan(devices, [t], NEW, 0.0, EXACT) is None


def test_never_evicts_a_loading_or_recently_moved_instance() -> None:
    devices, t = _cluster((), phase=InstancePhase.LOADING, gpu1=False)
    assert preemption_plan(devices, [t], NEW, 0.0, EXACT) is None
    devices, t = _cluster((), moved_at=-10.0, gpu1=False)  # moved 10 s ago, T_move 30 s
    assert preemption_plan(devices, [t], NEW, 0.0, EXACT) is None
    devices, t = _cluster((), moved_at=-31.0, gpu1=False)
    assert preemption_plan(devices, [t], NEW, 0.0, EXACT) is not None


def test_a_new_instance_destination_counts_its_load() -> None:
    # gpu1 holds no instance of model B: v's request would wait for a load there, not
    # excused. v0 is due at 76 s; its recompute prefill takes 0.4 s.
    t = instance("t", (req("t0", ttft_slo_s=60.0),), model=A, kv_gb=4.0)
    v = instance("v", (_ahead("v0"),), model=B, kv_gb=4.0)
    gpu0 = device(t, v, memory_gb=40.0)
    fast = device(node_id="gpu1", memory_gb=40.0, load_bytes_per_s=1 * GIB)  # 10 s load
    slow = device(node_id="gpu1", memory_gb=40.0, load_bytes_per_s=GIB // 10)  # 100 s
    plan = preemption_plan({"gpu0": gpu0, "gpu1": fast}, [t], NEW, 0.0, EXACT)
    assert plan is not None and plan.destination == Destination("gpu1", None)
    assert preemption_plan({"gpu0": gpu0, "gpu1": slow}, [t], NEW, 0.0, EXACT) is None


def test_cpu_victim_is_the_smallest_slice_that_opens_the_target() -> None:
    cpu = {"node_id": "cpu0", "model": B}
    # The target's decode takes 50 ms at batch 1, 100 ms at batch 2: slice 0.2, then 0.4.
    perf = PerfModel.from_tables(
        [[1, 1.0], [10_000, 10_000.0]],
        [(512, [[1, 50.0], [2, 100.0]]), (8192, [[1, 50.0], [2, 100.0]])],
    )
    target = instance("t", (req("t0", ttft_slo_s=60.0),), node_id="cpu0", model=A, perf=perf)
    light = instance("l", (_ahead("l0"),), perf=flat_perf(25.0), **cpu)  # 0.1
    medium = instance("m", (_ahead("m0"),), perf=flat_perf(75.0), **cpu)  # 0.3
    heavy = instance("h", (_ahead("h0"),), perf=flat_perf(100.0), **cpu)  # 0.4
    other = instance("w", (), node_id="cpu1", model=B)
    cpu0 = device(target, light, medium, heavy, node_id="cpu0", kind=DeviceKind.CPU)
    cpu1 = device(other, node_id="cpu1", kind=DeviceKind.CPU)
    new = req("new", input_tokens=100, ttft_slo_s=60.0)  # t's slice 0.4 with it: Σ = 1.2
    plan = preemption_plan({"cpu0": cpu0, "cpu1": cpu1}, [target], new, 0.0, EXACT)
    # l alone frees 0.1 (Σ 1.1 > 1); m frees 0.3 (Σ 0.9): the smallest that opens t.
    assert plan is not None and plan.victim_instance_id == "m"
    assert plan.kind is PreemptKind.DECODE and plan.destination == Destination("cpu1", "w")


# -- packing ------------------------------------------------------------------------------


def _pool(*, waiting_work: bool = True, moved_at=None):
    """cpu0 lightly used (one request of model A), cpu1 holds a resident model A instance."""
    small = instance("s", (_ahead("s0", output=1000),) if waiting_work else (), node_id="cpu0",
                     model=A, perf=flat_perf(25.0), moved_at_s=moved_at)  # fmt: skip
    idle = instance("i", (), node_id="cpu0", model=B)
    dest = instance("d", (req("d0", ttft_slo_s=600.0),), node_id="cpu1", model=A,
                    perf=flat_perf(100.0))  # fmt: skip
    return [
        device(small, idle, node_id="cpu0", kind=DeviceKind.CPU),
        device(dest, node_id="cpu1", kind=DeviceKind.CPU),
    ]


def test_pack_watch_waits_t_pack_below_the_threshold() -> None:
    pool = _pool()
    assert node_load(pool[0], 1.0) == 0.1 and node_load(pool[1], 1.0) == 0.4
    watch = PackWatch()
    watch.observe(pool, 0.0, EXACT)
    assert pack_plan(pool, 59.0, watch, 0, EXACT) is None  # below for 59 s < T_pack
    plan = pack_plan(pool, 60.0, watch, 0, EXACT)
    assert plan is not None and plan.node_id == "cpu0"
    moves = {m.instance_id: m.destination for m in plan.moves}
    assert moves == {"s": Destination("cpu1", "d"), "i": None}


def test_pack_watch_resets_when_the_load_rises() -> None:
    pool = _pool()
    watch = PackWatch()
    watch.observe(pool, 0.0, EXACT)
    busy = PolicyConfig(slo_margin=1.0, pack_below=0.05)  # 0.1 is above this threshold
    watch.observe(pool, 30.0, busy)
    watch.observe(pool, 40.0, EXACT)  # below again from 40 s
    assert pack_plan(pool, 90.0, watch, 0, EXACT) is None
    assert pack_plan(pool, 100.0, watch, 0, EXACT) is not None


def test_never_packs_while_a_request_waits_or_an_instance_just_moved() -> None:
    only_cpu0 = PolicyConfig(slo_margin=1.0, pack_below=0.3)  # cpu1 (0.4) is not a candidate
    pool = _pool()
    watch = PackWatch()
    watch.observe(pool, 0.0, only_cpu0)
    assert pack_plan(pool, 100.0, watch, 1, only_cpu0) is None
    assert pack_plan(pool, 100.0, watch, 0, only_cpu0) is not None
    moved = _pool(moved_at=90.0)
    assert pack_plan(moved, 100.0, watch, 0, only_cpu0) is None


def test_packing_needs_resident_destinations() -> None:
    small = instance("s", (_ahead("s0"),), node_id="cpu0", model=A, perf=flat_perf(25.0))
    other = instance("o", (req("o0", ttft_slo_s=60.0),), node_id="cpu1", model=B)
    pool = [
        device(small, node_id="cpu0", kind=DeviceKind.CPU),
        device(other, node_id="cpu1", kind=DeviceKind.CPU),
    ]
    watch = PackWatch()
    watch.observe(pool, 0.0, EXACT)
    assert pack_plan(pool, 100.0, watch, 0, EXACT) is None  # model A is resident nowhere else
