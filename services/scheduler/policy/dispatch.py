"""Where a request goes: `decide(view, request, now, system) -> DispatchDecision` (DESIGN.md §4).

1. route to an existing instance (busiest admissible first; baselines round-robin);
2. else, for SLINFER with preemption, preempt one co-located instance to open a target;
3. else place a new instance (CPU pool first, most loaded node first);
4. else NONE: the caller retries until the request's deadline, then drops it.

The decision also carries the KV allocation the memory ledger should be asked for (the
watermark rule of §3), so that the caller only applies it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import slinfer.policy.preemption as consolidator
from slinfer.policy.admission import AdmissionReason, memory_check
from slinfer.policy.config import DEFAULT_CONFIG, PolicyConfig
from slinfer.policy.kv_scaling import watermark_target
from slinfer.policy.placement import place
from slinfer.policy.routing import busiest_first, route
from slinfer.policy.shadow import ShadowInstance
from slinfer.policy.systems import SystemSpec
from slinfer.policy.types import (
    DeviceLike,
    InstanceLike,
    InstancePhase,
    RequestLike,
)
from slinfer.policy.view import DispatchView


class DispatchKind(enum.Enum):
    EXISTING = "existing"  # attach to `instance_id`
    PREEMPT = "preempt"  # release `victim_id`, then attach to `instance_id`
    NEW_INSTANCE = "new_instance"  # create an instance on `node_id`, attach to it
    NONE = "none"  # no capacity now


@dataclass(frozen=True, slots=True)
class DispatchDecision:
    kind: DispatchKind
    instance_id: str | None = None
    node_id: str | None = None
    victim_id: str | None = None
    kv_bytes: int | None = None  # KV allocation to request from the ledger; None: keep
    rr_cursor: int | None = None  # new round-robin position (baselines)
    reason: AdmissionReason | None = None


def kv_scale_up(
    device: DeviceLike,
    instance: InstanceLike,
    request: RequestLike,
    config: PolicyConfig,
    released_bytes: int = 0,
) -> int | None:
    """Watermark target of an elastic instance once `request` joins (None: no change)."""
    if instance.kv_pool_bytes is not None:
        return None
    shadow = ShadowInstance(instance, request)
    _, demand = memory_check(device, shadow, config)
    free = device.memory_bytes - device.planned_bytes + released_bytes
    block = instance.spec.block_bytes(device.kind)
    return watermark_target(demand, instance.planned_kv_bytes, free, config.watermark, block)


def decide(
    view: DispatchView,
    request: RequestLike,
    now: float,
    system: SystemSpec,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> DispatchDecision:
    routed = route(view, request, now, system, config)
    by_id = {c.instance_id: c for c in view.candidates}
    if routed.instance_id is not None:
        inst = by_id[routed.instance_id]
        kv = None
        if not system.is_baseline:
            kv = kv_scale_up(view.devices[inst.node_id], inst, request, config)
        return DispatchDecision(
            DispatchKind.EXISTING,
            instance_id=inst.instance_id,
            node_id=inst.node_id,
            kv_bytes=kv,
            rr_cursor=routed.rr_cursor,
            reason=routed.reason,
        )
    if system.preempt:
        live = [c for c in view.candidates if c.phase is not InstancePhase.RELEASING]
        plan = consolidator.preemption_plan(
            view.devices, busiest_first(live, system.defrag), request, now, config
        )
        if plan is not None:
            target = by_id[plan.target_instance_id]
            device = view.devices[target.node_id]
            victim = next(i for i in device.instances if i.instance_id == plan.victim_instance_id)
            released = victim.planned_weights_bytes + victim.planned_kv_bytes
            kv = kv_scale_up(device, target, request, config, released)
            return DispatchDecision(
                DispatchKind.PREEMPT,
                instance_id=target.instance_id,
                node_id=target.node_id,
                victim_id=victim.instance_id,
                kv_bytes=kv,
                reason=AdmissionReason.ADMITTED,
            )
    placed = place(view, request, now, system, config)
    if placed.node_id is not None:
        return DispatchDecision(
            DispatchKind.NEW_INSTANCE,
            node_id=placed.node_id,
            kv_bytes=placed.kv_bytes,
            reason=placed.reason,
        )
    return DispatchDecision(DispatchKind.NONE, reason=placed.reason or routed.reason)
