"""The scheduler's side of proactive preemption (DESIGN.md §4): the consolidator carries out.

The policy core's `decide` plans a preemption once (`preemption_plan`: a victim whose absence
admits the request, whose requests pass admission at a destination). The scheduler does not
evict anything itself: it hands the plan to the elected consolidator
(`/slinfer/election/consolidator`), which checks the plan still holds and evicts the victim;
the victim's requests come back to their schedulers as PREEMPTED streams and are
re-dispatched. Without a reachable leader, when the consolidator is advisory or the plan no
longer holds, the caller decides again without preemption.
"""

from __future__ import annotations

import time

import grpc
from loguru import logger

from slinfer.policy.preemption import PreemptionDecision, PreemptKind
from slinfer.services.cluster.state import ClusterView
from slinfer.services.common.security import channel
from slinfer.services.scheduler import metrics
from slinfer.v1 import consolidator_pb2, consolidator_pb2_grpc

LEADER_KIND = "consolidator"
_KINDS = {
    PreemptKind.MEMORY: consolidator_pb2.PLAN_KIND_PREEMPT_MEMORY,
    PreemptKind.DECODE: consolidator_pb2.PLAN_KIND_PREEMPT_DECODE,
}


def consolidator_address(view: ClusterView) -> str | None:
    leader = view.leaders.get(LEADER_KIND)
    return str(leader["address"]) if leader and leader.get("address") else None


def plan_message(
    plan: PreemptionDecision, model_id: str, request_id: str, scheduler_id: str
) -> consolidator_pb2.PreemptionPlan:
    dest = plan.destination
    return consolidator_pb2.PreemptionPlan(
        model_id=model_id,
        target_instance_id=plan.target_instance_id,
        victim_instance_id=plan.victim_instance_id,
        kind=_KINDS[plan.kind],
        destination_node_id=dest.node_id if dest else "",
        destination_instance_id=(dest.instance_id or "") if dest else "",
        scheduler_id=scheduler_id,
        request_id=request_id,
    )


class PreemptionClient:
    def __init__(self, scheduler_id: str = "", timeout_s: float = 10.0, backoff_s: float = 1.0):
        self.scheduler_id = scheduler_id
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s  # do not hand over a victim refused this recently
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._refused: dict[str, float] = {}

    def available(self, view: ClusterView) -> bool:
        return consolidator_address(view) is not None

    def recently_refused(self, victim: str) -> bool:
        return time.monotonic() - self._refused.get(victim, -1e9) < self.backoff_s

    async def carry_out(
        self, view: ClusterView, plan: PreemptionDecision, model_id: str, request_id: str
    ) -> bool:
        """True once the consolidator evicted the plan's victim."""
        address = consolidator_address(view)
        victim = plan.victim_instance_id
        if address is None or self.recently_refused(victim):
            return False
        ch = self._channels.get(address)
        if ch is None:
            ch = self._channels[address] = channel(address)
        stub = consolidator_pb2_grpc.ConsolidatorStub(ch)
        try:
            done = await stub.CarryOutPreemption(
                plan_message(plan, model_id, request_id, self.scheduler_id),
                timeout=self.timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            logger.info(
                "preemption of {} for request={} not carried out: {} {}",
                victim,
                request_id,
                exc.code().name,
                exc.details(),
            )
            self._refused[victim] = time.monotonic()
            metrics.PREEMPTION_PLANS.labels(model_id, "false").inc()
            return False
        executed = done.executed and not done.error
        if not executed:
            self._refused[victim] = time.monotonic()
        metrics.PREEMPTION_PLANS.labels(model_id, str(executed).lower()).inc()
        logger.info(
            "preemption plan {} for request={}: victim={} target={} executed={}",
            done.plan_id,
            request_id,
            victim,
            plan.target_instance_id,
            executed,
        )
        return executed

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()
