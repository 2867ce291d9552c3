"""Routing a request to an existing instance (DESIGN.md §4, "Reactive bin-packing").

SLINFER tries the *busiest* admissible instance first (largest batch), so that load piles onto
few instances and the rest can drain and be reclaimed; without defragmentation the order is
reversed (load balancing). Baselines go round-robin with a concurrency cap.
"""

from __future__ import annotations

from dataclasses import dataclass

from slinfer.policy.admission import AdmissionReason, shadow_validate
from slinfer.policy.baselines import cap_admit, round_robin
from slinfer.policy.config import DEFAULT_CONFIG, PolicyConfig
from slinfer.policy.systems import SystemSpec
from slinfer.policy.types import InstanceLike, InstancePhase, RequestLike
from slinfer.policy.view import DispatchView


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """`instance_id` None: no existing instance admits the request."""

    instance_id: str | None
    kv_demand_bytes: int | None = None
    rr_cursor: int | None = None
    reason: AdmissionReason | None = None


def busiest_first(candidates: list[InstanceLike], defrag: bool = True) -> list[InstanceLike]:
    """Largest batch first (stable); with `defrag=False`, smallest first."""
    ordered = sorted(candidates, key=lambda i: i.batch, reverse=True)
    if not defrag:
        ordered.sort(key=lambda i: i.batch)
    return ordered


def route(
    view: DispatchView,
    request: RequestLike,
    now: float,
    system: SystemSpec,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> RouteDecision:
    live = [c for c in view.candidates if c.phase is not InstancePhase.RELEASING]
    last: AdmissionReason | None = None
    if system.is_baseline:
        for index, inst in round_robin(view.candidates, view.rr_cursor):
            decision = cap_admit(view.devices[inst.node_id], inst, system)
            if decision.admitted:
                return RouteDecision(inst.instance_id, None, index + 1, AdmissionReason.ADMITTED)
            last = decision.reason
        return RouteDecision(None, reason=last)
    for inst in busiest_first(live, system.defrag):
        decision = shadow_validate(view.devices[inst.node_id], inst, request, now, config)
        if decision.admitted:
            return RouteDecision(inst.instance_id, decision.kv_demand_bytes, None, decision.reason)
        last = decision.reason
    return RouteDecision(None, reason=last)
