"""Consolidation (DESIGN.md §4): proactive preemption and a bin-packing drain plan.

Proactive preemption: when no instance admits a request but one would if a single constraint
were ignored (GPU: memory; CPU: decode budget), preempt the smallest co-located instance
(batch ≤ the target's, with the request) whose footprint or slice covers the gap. Loading or
releasing instances are never chosen, and a victim never holds more work than the target, so
work is never evicted for less urgent work. The victim's requests are re-dispatched with their
tokens so far (recompute); the caller does that.

Drain plan: the least loaded used node whose every instance fits, first-fit on the most loaded
other nodes, so that the node can be emptied and handed back (not enabled in the paper's
reactive scheme; offered to an operator's consolidation loop).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from slinfer.policy.admission import Check, memory_check, shadow_validate
from slinfer.policy.config import DEFAULT_CONFIG, PolicyConfig
from slinfer.policy.shadow import ShadowInstance
from slinfer.policy.time_slice import device_slices, time_slice
from slinfer.policy.types import (
    DeviceKind,
    DeviceLike,
    InstanceLike,
    InstancePhase,
    RequestLike,
)

_EPS = 1e-9  # slices are float sums; "covers the gap" must not hinge on the last bit


class PreemptKind(enum.Enum):
    MEMORY = "memory"  # GPU: free memory for the target's KV
    DECODE = "decode"  # CPU: free decode budget (time slice)


@dataclass(frozen=True, slots=True)
class PreemptionDecision:
    target_instance_id: str
    victim_instance_id: str
    kind: PreemptKind
    gap: float  # bytes (MEMORY) or slice fraction (DECODE) the victim must cover


def memory_gap_bytes(
    device: DeviceLike, target: InstanceLike, config: PolicyConfig = DEFAULT_CONFIG
) -> int:
    """How far the node's plan would exceed its memory with `target` at its KV demand."""
    _, demand = memory_check(device, target, config)
    own = target.planned_weights_bytes + target.planned_kv_bytes
    need = (
        device.planned_bytes
        - own
        + target.spec.weights_bytes
        + max(target.planned_kv_bytes, demand)
    )
    return need - device.memory_bytes


def _eligible(inst: InstanceLike, target: InstanceLike) -> bool:
    return (
        inst.instance_id != target.instance_id
        and inst.phase is InstancePhase.READY
        and inst.batch <= target.batch
    )


def memory_victim(
    device: DeviceLike, target: InstanceLike, config: PolicyConfig = DEFAULT_CONFIG
) -> tuple[InstanceLike | None, int]:
    """(victim, gap): smallest-batch resident instance whose footprint covers the gap."""
    gap = memory_gap_bytes(device, target, config)
    candidates = [
        i for i in device.instances if _eligible(i, target) and i.planned_weights_bytes > 0
    ]
    candidates.sort(key=lambda i: i.batch)
    for inst in candidates:
        if inst.planned_weights_bytes + inst.planned_kv_bytes >= gap:
            return inst, gap
    return None, gap


def decode_victim(
    device: DeviceLike, target: InstanceLike, config: PolicyConfig = DEFAULT_CONFIG
) -> tuple[InstanceLike | None, float]:
    """(victim, gap): smallest-batch busy instance whose time slice covers the overload."""
    margin = config.slo_margin
    gap = device_slices(device, margin, replace=target) - 1.0
    if time_slice(target, margin) > 1.0 + _EPS:
        return None, gap
    candidates = [i for i in device.instances if _eligible(i, target) and i.batch > 0]
    candidates.sort(key=lambda i: i.batch)
    for inst in candidates:
        if time_slice(inst, margin) >= gap - _EPS:
            return inst, gap
    return None, gap


def choose_victim(
    device: DeviceLike, target: InstanceLike, config: PolicyConfig = DEFAULT_CONFIG
) -> str | None:
    """Victim id for `target` (an instance with the new request already added) on `device`."""
    if device.kind is DeviceKind.GPU:
        victim, _ = memory_victim(device, target, config)
    else:
        victim, _ = decode_victim(device, target, config)
    return None if victim is None else victim.instance_id


def preemption_plan(
    devices: Mapping[str, DeviceLike],
    candidates: Sequence[InstanceLike],
    request: RequestLike,
    now: float,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> PreemptionDecision | None:
    """First candidate (in the caller's routing order) that a single preemption would open."""
    for inst in candidates:
        if inst.phase is InstancePhase.RELEASING:
            continue
        device = devices[inst.node_id]
        gpu = device.kind is DeviceKind.GPU
        ignored = Check.MEMORY if gpu else Check.DECODE_BUDGET
        if not shadow_validate(device, inst, request, now, config, frozenset({ignored})).admitted:
            continue
        shadow = ShadowInstance(inst, request)
        victim: InstanceLike | None
        gap: float
        if gpu:
            victim, gap_bytes = memory_victim(device, shadow, config)
            kind, gap = PreemptKind.MEMORY, float(gap_bytes)
        else:
            victim, gap = decode_victim(device, shadow, config)
            kind = PreemptKind.DECODE
        if victim is not None:
            return PreemptionDecision(inst.instance_id, victim.instance_id, kind, gap)
    return None


@dataclass(frozen=True, slots=True)
class Move:
    instance_id: str
    source_node_id: str
    target_node_id: str


@dataclass(frozen=True, slots=True)
class DrainPlan:
    node_id: str
    moves: tuple[Move, ...]


def _load(device: DeviceLike, margin: float) -> float:
    if device.kind is DeviceKind.CPU:
        return device_slices(device, margin)
    return float(device.planned_bytes)


def drain_plan(
    devices: Sequence[DeviceLike], config: PolicyConfig = DEFAULT_CONFIG
) -> DrainPlan | None:
    """Plan to empty the least loaded used node of one pool into the others, or None."""
    margin = config.slo_margin
    used = [d for d in devices if d.instances]
    if len(used) < 2:
        return None
    used.sort(key=lambda d: _load(d, margin))
    source, others = used[0], sorted(used[1:], key=lambda d: _load(d, margin), reverse=True)
    slices = {d.node_id: device_slices(d, margin) for d in others}
    planned = {d.node_id: d.planned_bytes for d in others}
    counts = {d.node_id: len(d.instances) for d in others}
    moves: list[Move] = []
    for inst in source.instances:
        if inst.phase is not InstancePhase.READY:
            return None
        need_slice = time_slice(inst, margin)
        need_bytes = inst.planned_weights_bytes + inst.planned_kv_bytes
        for dest in others:
            nid = dest.node_id
            if dest.max_instances is not None and counts[nid] >= dest.max_instances:
                continue
            if slices[nid] + need_slice > 1.0 or planned[nid] + need_bytes > dest.memory_bytes:
                continue
            slices[nid] += need_slice
            planned[nid] += need_bytes
            counts[nid] += 1
            moves.append(Move(inst.instance_id, source.node_id, nid))
            break
        else:
            return None
    return DrainPlan(source.node_id, tuple(moves))
