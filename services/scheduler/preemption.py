"""The scheduler's side of proactive preemption (DESIGN.md §4): ask the consolidator.

When the policy core's `decide` answers PREEMPT (no instance admits the request, but one
would if a single constraint were ignored), the scheduler does not evict anything itself: it
asks the elected consolidator (`/slinfer/election/consolidator`) for a plan. The consolidator
picks the victim with the same policy module and evicts it; the victim's requests come back
to their schedulers as PREEMPTED streams and are re-dispatched. Without a reachable leader,
or when the consolidator is advisory, the caller decides again without preemption.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import grpc
from loguru import logger

from slinfer.services.scheduler import metrics
from slinfer.services.scheduler.state import ClusterView
from slinfer.services.scheduler.tracker import LiveRequest
from slinfer.v1 import consolidator_pb2, consolidator_pb2_grpc

LEADER_KIND = "consolidator"


def consolidator_address(view: ClusterView) -> str | None:
    leader = view.leaders.get(LEADER_KIND)
    return str(leader["address"]) if leader and leader.get("address") else None


def pending_request(req: LiveRequest) -> consolidator_pb2.PendingRequest:
    return consolidator_pb2.PendingRequest(
        request_id=req.request_id,
        arrival_unix_s=req.arrival_s,
        input_tokens=req.input_tokens,
        output_tokens=req.output_tokens,
        ttft_slo_s=req.ttft_slo_s,
        tpot_slo_s=req.tpot_slo_s,
        excused_s=req.excused_s,
    )


class PreemptionClient:
    def __init__(self, scheduler_id: str = "", timeout_s: float = 10.0, backoff_s: float = 1.0):
        self.scheduler_id = scheduler_id
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s  # do not ask again for a target refused this recently
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._refused: dict[str, float] = {}

    def available(self, view: ClusterView) -> bool:
        return consolidator_address(view) is not None

    def recently_refused(self, target: str) -> bool:
        return time.monotonic() - self._refused.get(target, -1e9) < self.backoff_s

    async def ask(
        self,
        view: ClusterView,
        model_id: str,
        candidates: Sequence[str],
        req: LiveRequest,
    ) -> list[str]:
        """The victims of the plan the consolidator carried out ([]: none, decide again)."""
        address = consolidator_address(view)
        target = candidates[0] if candidates else ""
        if address is None or self.recently_refused(target):
            return []
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(address)
        stub = consolidator_pb2_grpc.ConsolidatorStub(channel)
        try:
            plan = await stub.PlanPreemption(
                consolidator_pb2.PlanPreemptionRequest(
                    model_id=model_id,
                    candidate_instance_ids=list(candidates),
                    request=pending_request(req),
                    scheduler_id=self.scheduler_id,
                ),
                timeout=self.timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            logger.info(
                "no preemption for request={} model={}: {} {}",
                req.request_id,
                model_id,
                exc.code().name,
                exc.details(),
            )
            self._refused[target] = time.monotonic()
            metrics.PREEMPTION_PLANS.labels(model_id, "false").inc()
            return []
        executed = plan.executed and not plan.error
        if not executed:
            self._refused[target] = time.monotonic()
        metrics.PREEMPTION_PLANS.labels(model_id, str(executed).lower()).inc()
        logger.info(
            "preemption plan {} for request={}: victims={} executed={}",
            plan.plan_id,
            req.request_id,
            list(plan.victim_instance_ids),
            executed,
        )
        return list(plan.victim_instance_ids) if executed else []

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
