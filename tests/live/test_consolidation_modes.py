"""Consolidation modes, live: advisory changes nothing, slinfer-no-defrag neither preempts nor
packs, one policy module for the simulator and the consolidator, leader failover."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
import pytest_asyncio

import slinfer.policy.preemption as consolidation_policy
from slinfer import Completion
from slinfer.policy import SystemName, system_spec
from slinfer.services.common import keys
from slinfer.services.common.errors import FailedPrecondition
from slinfer.services.common.etcd_process import start_etcd
from slinfer.services.consolidator.server import create as create_consolidator
from slinfer.services.inprocess import LiveStack
from slinfer.services.scheduler.dispatch import DispatchConfig
from slinfer.v1 import consolidator_pb2, consolidator_pb2_grpc
from tests.live.test_consolidation import (  # noqa: F401  (model_dir, seeded: fixtures)
    PROMPT,
    _freeze,
    _until,
    model_dir,
    seeded,
)
from tests.sim.helpers import make_sim, synthetic_trace

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def advisory(etcd, model_dir, seeded):  # noqa: F811
    s = await LiveStack.start(
        etcd.endpoint,
        workers=[
            {
                "node_id": f"cpu-{i}",
                "memory_bytes": 2 << 30,
                "num_threads": 1,
                "profile_dir": seeded,
            }
            for i in range(2)
        ],
        consolidator={"advisory": True, "pack_every_s": 0.2},
    )
    await s.c.deploy("q", str(model_dir), ttft_slo_s=60.0, tpot_slo_s=5.0)
    yield s
    await s.stop()


def _stub(address: str) -> consolidator_pb2_grpc.ConsolidatorStub:
    return consolidator_pb2_grpc.ConsolidatorStub(grpc.aio.insecure_channel(address))


async def _final(stack: LiveStack, model: str, **kw) -> Completion:
    final = None
    async for ev in stack.c.generate(
        model, prompt_token_ids=PROMPT, temperature=0, ignore_eos=True, **kw
    ):
        if isinstance(ev, Completion):
            final = ev
    assert final is not None
    return final


async def test_advisory_mode_lists_plans_and_changes_nothing(advisory: LiveStack) -> None:
    svc = advisory.others[1]
    stub = _stub(svc.address)
    first = await _final(advisory, "q", max_tokens=2)
    iid, node = first.instance_id, first.node_id
    task = asyncio.create_task(_final(advisory, "q", max_tokens=150))
    await _until(lambda: advisory.scheduler.dispatcher.tracker.busy(iid), what="a busy instance")
    _freeze(advisory, int(node.split("-")[1]), 0.3)
    preempt = await stub.Preempt(consolidator_pb2.PreemptRequest(instance_id=iid))
    drain = await stub.Drain(consolidator_pb2.DrainRequest(node_id=node))
    final = await task
    view = advisory.scheduler.watcher.view
    assert preempt.advisory and not preempt.executed and list(preempt.victim_instance_ids) == [iid]
    assert drain.advisory and not drain.executed and iid in drain.victim_instance_ids
    assert final.instance_id == iid and final.completion_tokens == 150, "nothing was moved"
    assert iid in view.instances and not view.drains, "no eviction, no drain mark"
    entries, _ = await advisory.scheduler.store.list(keys.DRAIN)
    assert entries == []
    listed = await stub.ListPlans(consolidator_pb2.ListPlansRequest())
    assert listed.advisory and listed.leader
    ids = [p.plan_id for p in listed.plans]
    assert drain.plan_id in ids and preempt.plan_id in ids
    assert all(p.advisory and not p.executed for p in listed.plans)
    from slinfer.services.consolidator import metrics

    advisory_count = metrics.PLANS.labels("preempt_operator", "advisory")._value.get()
    assert advisory_count >= 1


async def test_advisory_packing_plans_but_moves_nothing(
    advisory: LiveStack,
    model_dir,  # noqa: F811
) -> None:
    from slinfer.v1 import worker_pb2

    view = advisory.scheduler.watcher.view
    empty = next(w for w in advisory.workers if not view.instances_on(w.node_id))
    await empty.load_instance(
        worker_pb2.LoadInstanceRequest(
            instance_id="q-other", model_id="q", path=str(model_dir), kv_capacity_tokens=256
        )
    )
    await _until(lambda: len(view.nodes_in_use()) == 2, what="two nodes in use")
    stub = _stub(advisory.others[1].address)

    def packs(plans):
        return [p for p in plans if p.kind == consolidator_pb2.PLAN_KIND_PACK]

    deadline = time.monotonic() + 20
    while not packs((await stub.ListPlans(consolidator_pb2.ListPlansRequest())).plans):
        assert time.monotonic() < deadline, "the packing loop planned nothing"
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)
    assert len(view.nodes_in_use()) == 2, "advisory packing moved nothing"
    await empty.unload_instance("q-other")


async def test_no_defrag_neither_preempts_nor_packs(etcd) -> None:
    svc = create_consolidator(etcd.endpoint, system=SystemName.SLINFER_NO_DEFRAG, pack_every_s=0.1)
    assert not svc.config.preempt and not svc.config.pack
    with pytest.raises(FailedPrecondition, match="preemption is off"):
        await svc.consolidation.plan_preemption(
            consolidator_pb2.PlanPreemptionRequest(
                model_id="q", request=consolidator_pb2.PendingRequest(input_tokens=4)
            )
        )
    assert await svc.consolidation.pack_once() is None
    # The scheduler side: slinfer-no-defrag decides without the preemption step.
    assert not system_spec(DispatchConfig(system=SystemName.SLINFER_NO_DEFRAG).system).preempt


async def test_simulator_and_live_consolidator_call_the_same_policy(
    advisory: LiveStack, monkeypatch
) -> None:
    calls: list[str] = []
    original = consolidation_policy.preemption_plan

    def spy(*args, **kwargs):
        calls.append("call")
        return original(*args, **kwargs)

    monkeypatch.setattr(consolidation_policy, "preemption_plan", spy)
    # The simulator (virtual clock) drives it through the policy core's decide().
    rows = [(0.0, 0, 200, 60)] + [(0.5 + 0.2 * k, 1, 300 + 400 * k, 50) for k in range(6)]
    make_sim(synthetic_trace(rows), SystemName.SLINFER, model="13b").run()
    sim_calls = len(calls)
    assert sim_calls > 0, "the simulator called the consolidation policy"
    # The live consolidator answers a scheduler's PlanPreemption with the same function.
    first = await _final(advisory, "q", max_tokens=2)
    stub = _stub(advisory.others[1].address)
    with pytest.raises(grpc.aio.AioRpcError) as err:  # nothing to preempt: NOT_FOUND
        await stub.PlanPreemption(
            consolidator_pb2.PlanPreemptionRequest(
                model_id="q",
                candidate_instance_ids=[first.instance_id],
                request=consolidator_pb2.PendingRequest(
                    request_id="probe",
                    arrival_unix_s=time.time(),
                    input_tokens=4,
                    ttft_slo_s=60.0,
                    tpot_slo_s=5.0,
                ),
            )
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(calls) > sim_calls, "the live consolidator called the same policy function"


async def test_leadership_moves_when_the_leader_stops() -> None:
    etcd = start_etcd()  # its own cluster: the stack's consolidator leads the module's etcd
    a = create_consolidator(etcd.endpoint, election_ttl_s=2)
    b = create_consolidator(etcd.endpoint, election_ttl_s=2)
    await a.start()
    await _until(a.is_leader, what="a leads")
    await b.start()
    try:
        await asyncio.sleep(1.0)
        assert not b.is_leader(), "one leader at a time"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _stub(b.address).Preempt(consolidator_pb2.PreemptRequest(instance_id="x"))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert a.address in err.value.details(), "the follower names the leader"
        await a.stop()
        await _until(b.is_leader, timeout_s=15, what="b takes over")
    finally:
        await b.stop()
        etcd.stop()
