"""Recent consolidation plans: what was decided, and whether it was carried out.

Every plan (advisory ones included) is logged as one structured line, counted in
`slinfer:consolidator_plans_total{kind,outcome}` and kept in a bounded list that
`Consolidator.ListPlans` returns, newest first.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Sequence

from loguru import logger

from slinfer.services.consolidator import metrics
from slinfer.v1 import consolidator_pb2

KIND_NAMES = {
    consolidator_pb2.PLAN_KIND_PREEMPT_MEMORY: "preempt_memory",
    consolidator_pb2.PLAN_KIND_PREEMPT_DECODE: "preempt_decode",
    consolidator_pb2.PLAN_KIND_PREEMPT_OPERATOR: "preempt_operator",
    consolidator_pb2.PLAN_KIND_DRAIN: "drain",
    consolidator_pb2.PLAN_KIND_PACK: "pack",
    consolidator_pb2.PLAN_KIND_UNDRAIN: "undrain",
}


def new_plan(
    kind: int,
    victims: Sequence[str] = (),
    *,
    target: str = "",
    node_id: str = "",
    destination: tuple[str, str] = ("", ""),
    advisory: bool = False,
) -> consolidator_pb2.Plan:
    return consolidator_pb2.Plan(
        plan_id=uuid.uuid4().hex[:12],
        kind=kind,  # type: ignore[arg-type]
        created_unix_s=time.time(),
        target_instance_id=target,
        victim_instance_ids=list(victims),
        node_id=node_id,
        destination_node_id=destination[0],
        destination_instance_id=destination[1],
        advisory=advisory,
    )


class PlanLog:
    def __init__(self, keep: int = 200) -> None:
        self._plans: deque[consolidator_pb2.Plan] = deque(maxlen=keep)

    def record(self, plan: consolidator_pb2.Plan) -> consolidator_pb2.Plan:
        outcome = (
            "advisory"
            if plan.advisory
            else "failed"
            if plan.error
            else "executed"
            if plan.executed
            else "none"
        )
        kind = KIND_NAMES.get(plan.kind, "unknown")
        metrics.PLANS.labels(kind, outcome).inc()
        metrics.REQUESTS_MOVED.inc(plan.requests_moved)
        self._plans.append(plan)
        logger.info(
            "plan={} kind={} outcome={} target={} victims={} node={} destination={} moved={} {}",
            plan.plan_id,
            kind,
            outcome,
            plan.target_instance_id or "-",
            ",".join(plan.victim_instance_ids) or "-",
            plan.node_id or "-",
            plan.destination_instance_id or plan.destination_node_id or "-",
            plan.requests_moved,
            plan.error,
        )
        return plan

    def recent(self, limit: int = 50) -> list[consolidator_pb2.Plan]:
        return list(reversed(self._plans))[: max(1, limit)]
