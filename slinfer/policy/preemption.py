"""Proactive preemption that pays (DESIGN.md §4).

When no instance admits a request, but one would if a co-located instance were gone, the
policy may preempt that instance — only if the move pays: every request of the victim must
pass admission at a destination with its recompute prefill (prompt plus tokens so far) and,
where the destination must first load, the load time counted against its deadline (not
excused). Resident destinations come first.

Victims: ready instances (never loading or leaving ones), none moved within T_move
(`move_cooldown_s`), none holding a request more urgent than the new one (smaller headroom):
work is never evicted for less urgent work. Among those whose absence admits the request,
the smallest goes (CPU: time slice; GPU: footprint), the one with most headroom first on ties.
The caller carries the plan out: it evicts the victim, whose requests are re-dispatched with
their tokens so far (nothing lost, nothing sent twice).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from slinfer.policy.admission import shadow_validate, validate_group
from slinfer.policy.config import DEFAULT_CONFIG, PolicyConfig
from slinfer.policy.device_edit import Without
from slinfer.policy.headroom import headroom_s
from slinfer.policy.time_slice import time_slice
from slinfer.policy.types import (
    DeviceKind,
    DeviceLike,
    InstanceLike,
    InstancePhase,
    InstanceView,
    RequestLike,
)


class PreemptKind(enum.Enum):
    MEMORY = "memory"  # GPU: the victim's memory opens the target
    DECODE = "decode"  # CPU: the victim's share of the device's time opens the target


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a victim's requests go: a resident instance, or a new one on `node_id`."""

    node_id: str
    instance_id: str | None  # None: a new instance (it loads first)


@dataclass(frozen=True, slots=True)
class PreemptionDecision:
    target_instance_id: str
    victim_instance_id: str
    kind: PreemptKind
    destination: Destination | None  # None: the victim holds no request


def recently_moved(inst: InstanceLike, now: float, config: PolicyConfig) -> bool:
    moved = inst.moved_at_s
    return moved is not None and now - moved < config.move_cooldown_s


def min_headroom_s(inst: InstanceLike, now: float, margin: float) -> float:
    return min((headroom_s(r, now, margin) for r in inst.requests), default=float("inf"))


def _size(inst: InstanceLike, kind: DeviceKind, margin: float) -> float:
    if kind is DeviceKind.GPU:
        return float(inst.planned_weights_bytes + inst.planned_kv_bytes)
    return time_slice(inst, margin)


def eligible_victims(
    device: DeviceLike,
    target: InstanceLike,
    request: RequestLike,
    now: float,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> list[InstanceLike]:
    """Co-located instances that may be preempted for `request`, smallest first."""
    margin = config.slo_margin
    urgency = headroom_s(request, now, margin)
    out = []
    for inst in device.instances:
        if inst.instance_id == target.instance_id or inst.phase is not InstancePhase.READY:
            continue
        if recently_moved(inst, now, config) or min_headroom_s(inst, now, margin) < urgency:
            continue
        out.append(inst)
    out.sort(key=lambda i: (_size(i, device.kind, margin), -min_headroom_s(i, now, margin)))
    return out


def resident_destination(
    devices: Mapping[str, DeviceLike],
    model_name: str,
    moved: Sequence[RequestLike],
    away_from: str,
    now: float,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> Destination | None:
    """A ready instance of `model_name` off node `away_from` that admits all of `moved`
    together (recompute prefills, no load)."""
    for device in devices.values():
        if device.node_id == away_from:
            continue
        for inst in device.instances:
            if inst.model_name != model_name or inst.phase is not InstancePhase.READY:
                continue
            if validate_group(device, inst, moved, now, config, excuse_load=False).admitted:
                return Destination(device.node_id, inst.instance_id)
    return None


def move_destination(
    devices: Mapping[str, DeviceLike],
    victim: InstanceLike,
    now: float,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> Destination | None:
    """Where all of `victim`'s requests pass admission together (recompute, load counted)."""
    moved = tuple(victim.requests)
    found = resident_destination(devices, victim.model_name, moved, victim.node_id, now, config)
    if found is not None:
        return found
    others = [d for d in devices.values() if d.node_id != victim.node_id]
    home = devices[victim.node_id]
    for device in others:  # then a new instance, whose load counts against the deadlines
        if device.kind is not home.kind or device.label != home.label:
            continue  # the victim's tables hold for devices of its own label only
        if device.max_instances is not None and len(device.instances) >= device.max_instances:
            continue
        fresh = InstanceView(
            instance_id=f"<move:{victim.instance_id}@{device.node_id}>",
            model_name=victim.model_name,
            node_id=device.node_id,
            phase=InstancePhase.LOADING,
            perf=victim.perf,
            spec=victim.spec,
            kv_pool_bytes=victim.kv_pool_bytes,
            tpot_slo_s=victim.tpot_slo_s,
            mean_output_tokens=victim.mean_output_tokens,
            ready_at_s=now + device.load_s(victim.spec.weights_bytes),
        )
        if validate_group(device, fresh, moved, now, config, excuse_load=False).admitted:
            return Destination(device.node_id, None)
    return None


def preemption_plan(
    devices: Mapping[str, DeviceLike],
    candidates: Sequence[InstanceLike],
    request: RequestLike,
    now: float,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> PreemptionDecision | None:
    """First candidate (in routing order) that one paying preemption opens, or None."""
    for target in candidates:
        if target.phase is InstancePhase.RELEASING:
            continue
        device = devices[target.node_id]
        for victim in eligible_victims(device, target, request, now, config):
            if not shadow_validate(Without(device, victim), target, request, now, config).admitted:
                continue
            destination = None
            if victim.requests:
                destination = move_destination(devices, victim, now, config)
                if destination is None:
                    continue  # the move would not pay
            kind = PreemptKind.MEMORY if device.kind is DeviceKind.GPU else PreemptKind.DECODE
            return PreemptionDecision(target.instance_id, victim.instance_id, kind, destination)
    return None
