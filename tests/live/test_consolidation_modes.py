"""Consolidation modes, live: advisory changes nothing, slinfer-no-defrag neither preempts nor
packs, leader failover. (That the simulator and the live scheduler plan alike is
tests/policy/test_parity.py: both call policy.decide, which plans preemptions.)"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import grpc
import pytest
import pytest_asyncio

from slinfer import Completion
from slinfer.policy import SystemName, system_spec
from slinfer.services.common import keys
from slinfer.services.common.errors import FailedPrecondition
from slinfer.services.common.etcd_process import start_etcd
from slinfer.services.common.security import INSECURE
from slinfer.services.consolidator.server import create as create_consolidator
from slinfer.services.inprocess import LiveStack
from slinfer.services.scheduler.dispatch_config import LIVE_POLICY, DispatchConfig
from slinfer.v1 import consolidator_pb2, consolidator_pb2_grpc
from tests.live.support import hold_iterations
from tests.live.test_consolidation import (  # noqa: F401  (model_dir, seeded: fixtures)
    PROMPT,
    model_dir,
    seeded,
)
from tests.live.waits import wait_until

pytestmark = [pytest.mark.live, pytest.mark.asyncio(loop_scope="session")]


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
        # T_pack short, so a packing cycle finds a node due within the test.
        dispatch=DispatchConfig(
            default_kv_capacity_tokens=2048, policy=replace(LIVE_POLICY, pack_after_s=0.5)
        ),
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
    await wait_until(
        lambda: advisory.scheduler.dispatcher.tracker.busy(iid), what="a busy instance"
    )
    with hold_iterations(advisory.engine_of(iid)):  # mid-stream while both plans are made
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
    await empty.lifecycle.load(
        worker_pb2.LoadInstanceRequest(
            instance_id="q-other", model_id="q", path=str(model_dir), kv_capacity_tokens=256
        )
    )
    await wait_until(lambda: len(view.nodes_in_use()) == 2, what="two nodes in use")
    stub = _stub(advisory.others[1].address)

    async def packs():
        plans = (await stub.ListPlans(consolidator_pb2.ListPlansRequest())).plans
        return [p for p in plans if p.kind == consolidator_pb2.PLAN_KIND_PACK]

    # A packing cycle carries its plan out before recording it (pack_once): a recorded plan
    # that is advisory and not executed is a cycle that planned and moved nothing.
    planned = await wait_until(packs, what="a packing plan")
    assert all(p.advisory and not p.executed for p in planned)
    assert len(view.nodes_in_use()) == 2, "advisory packing moved nothing"
    assert "q-other" in view.instances
    await empty.unload_instance("q-other")


async def test_no_defrag_neither_preempts_nor_packs(etcd) -> None:
    svc = create_consolidator(
        etcd.endpoint, system=SystemName.SLINFER_NO_DEFRAG, pack_every_s=0.1, security=INSECURE
    )
    assert not svc.config.preempt and not svc.config.pack
    with pytest.raises(FailedPrecondition, match="preemption is off"):
        await svc.consolidation.carry_out_preemption(
            consolidator_pb2.PreemptionPlan(
                model_id="q",
                target_instance_id="t",
                victim_instance_id="v",
                kind=consolidator_pb2.PLAN_KIND_PREEMPT_DECODE,
            )
        )
    assert await svc.consolidation.pack_once() is None
    # The scheduler side: slinfer-no-defrag decides without the preemption step.
    assert not system_spec(DispatchConfig(system=SystemName.SLINFER_NO_DEFRAG).system).preempt


async def test_a_plan_that_no_longer_holds_is_refused(advisory: LiveStack) -> None:
    """The consolidator carries out a scheduler's plan only while it holds: a victim that
    is gone is refused with FAILED_PRECONDITION (the scheduler then decides again)."""
    first = await _final(advisory, "q", max_tokens=2)
    stub = _stub(advisory.others[1].address)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CarryOutPreemption(
            consolidator_pb2.PreemptionPlan(
                model_id="q",
                target_instance_id=first.instance_id,
                victim_instance_id="gone-instance",
                kind=consolidator_pb2.PLAN_KIND_PREEMPT_DECODE,
            )
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "decide again" in err.value.details()


async def test_leadership_moves_when_the_leader_stops() -> None:
    etcd = start_etcd()  # its own cluster: the stack's consolidator leads the module's etcd
    a = create_consolidator(etcd.endpoint, election_ttl_s=2, security=INSECURE)
    b = create_consolidator(etcd.endpoint, election_ttl_s=2, security=INSECURE)
    await a.start()
    await wait_until(a.is_leader, what="a leads")
    await b.start()
    try:
        election = b.election
        assert election is not None
        await wait_until(lambda: election.campaigns_lost >= 2, what="b's campaigns")
        assert not b.is_leader(), "one leader at a time"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _stub(b.address).Preempt(consolidator_pb2.PreemptRequest(instance_id="x"))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert a.address in err.value.details(), "the follower names the leader"
        await a.stop()
        await wait_until(b.is_leader, timeout_s=60, what="b takes over")
    finally:
        await b.stop()
        etcd.stop()
