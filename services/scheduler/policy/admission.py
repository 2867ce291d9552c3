"""Admission by shadow validation (DESIGN.md §2, "Admission").

A request may join an instance only if, with the request added, all hold:
(1) memory: the forward-looking KV demand fits (§3): within the fixed pool of a CPU engine,
    or within the node's memory next to the other instances' planned footprints (GPU);
(2) decode budget: Σ time slices on the device ≤ 1;
(3) prefill deadlines: an earliest-deadline-first simulation of the device's pending prefills,
    from the moment the device is next free (now, or the end of the running iteration),
    misses no deadline at or after the new request's position. Instances still loading are
    left out, the target included (artifact): their wait is excused, as the paper counts it,
    and they cannot run yet. A device whose new instances start resident (the artifact's
    pre-started CPU workers) is therefore always checked.
`ignore` drops one check; proactive preemption (§4) uses it to ask "would it fit if…".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from slinfer.policy.config import DEFAULT_CONFIG, PolicyConfig
from slinfer.policy.headroom import deadline_s
from slinfer.policy.kv_scaling import kv_demand
from slinfer.policy.shadow import ShadowInstance
from slinfer.policy.time_slice import device_slices
from slinfer.policy.types import (
    DeviceLike,
    InstanceLike,
    InstancePhase,
    RequestLike,
)

_EPS = 1e-9  # Σ slices is a float sum; a budget filled exactly still fits


class Check(enum.Enum):
    MEMORY = "memory"
    DECODE_BUDGET = "decode_budget"
    PREFILL_DEADLINE = "prefill_deadline"


class AdmissionReason(enum.Enum):
    ADMITTED = "admitted"
    NOT_ACCEPTING = "not_accepting"  # the instance is being released
    MEMORY = "memory"
    DECODE_BUDGET = "decode_budget"
    PREFILL_DEADLINE = "prefill_deadline"
    CONCURRENCY_CAP = "concurrency_cap"  # baselines only


@dataclass(frozen=True, slots=True)
class AdmissionDecision:
    admitted: bool
    reason: AdmissionReason
    kv_demand_bytes: int | None = None


def memory_check(
    device: DeviceLike, shadow: InstanceLike, config: PolicyConfig = DEFAULT_CONFIG
) -> tuple[bool, int]:
    """(fits, KV demand in bytes) of `shadow` on `device`."""
    spec = shadow.spec
    demand = kv_demand(
        shadow.requests,
        shadow.mean_output_tokens,
        spec.kv_bytes_per_token,
        config.l_min_tokens,
        spec.block_tokens(device.kind),
    )
    own = shadow.planned_weights_bytes + shadow.planned_kv_bytes
    others = device.planned_bytes - own
    pool = shadow.kv_pool_bytes
    if pool is not None:
        fits = demand <= pool and others + spec.weights_bytes + pool <= device.memory_bytes
        return fits, demand
    need = others + spec.weights_bytes + max(shadow.planned_kv_bytes, demand)
    return need <= device.memory_bytes, demand


def decode_budget_check(
    device: DeviceLike, shadow: InstanceLike, config: PolicyConfig = DEFAULT_CONFIG
) -> bool:
    return device_slices(device, config.slo_margin, replace=shadow) <= 1.0 + _EPS


def prefill_deadline_check(
    device: DeviceLike, shadow: InstanceLike, now: float, config: PolicyConfig = DEFAULT_CONFIG
) -> bool:
    margin = config.slo_margin
    entries: list[tuple[float, float, bool]] = []
    seen_target = False
    for inst in device.instances:
        is_target = inst.instance_id == shadow.instance_id
        if is_target:
            inst, seen_target = shadow, True
        _add_prefill_entry(entries, inst, margin, is_target)
    if not seen_target:
        _add_prefill_entry(entries, shadow, margin, True)
    entries.sort()
    stretch = 1.0
    if config.prefill_on_leftover:
        leftover = 1.0 - device_slices(device, margin, replace=shadow)
        if leftover <= _EPS:
            return not any(is_target for _, _, is_target in entries)
        stretch = 1.0 / leftover
    t = now if device.busy_until_s is None else max(now, device.busy_until_s)
    entered = False
    for ddl, duration, is_target in entries:
        entered = entered or is_target
        t += duration * stretch
        if entered and t > ddl:
            return False
    return True


def _add_prefill_entry(
    entries: list[tuple[float, float, bool]], inst: InstanceLike, margin: float, is_target: bool
) -> None:
    if inst.phase is InstancePhase.LOADING:
        return
    queue = inst.prefill_queue
    if not queue:
        return
    perf = inst.perf
    duration = sum(perf.prefill_s(r.input_tokens + r.output_tokens) for r in queue)
    ddl = min(deadline_s(r, margin) for r in queue)
    entries.append((ddl, duration, is_target))


def shadow_validate(
    device: DeviceLike,
    instance: InstanceLike,
    request: RequestLike,
    now: float,
    config: PolicyConfig = DEFAULT_CONFIG,
    ignore: frozenset[Check] = frozenset(),
) -> AdmissionDecision:
    """May `request` join `instance` on `device` at `now`? (DESIGN.md §2, checks 1–3)."""
    if instance.phase is InstancePhase.RELEASING:
        return AdmissionDecision(False, AdmissionReason.NOT_ACCEPTING)
    shadow = ShadowInstance(instance, request)
    demand: int | None = None
    if Check.MEMORY not in ignore:
        fits, demand = memory_check(device, shadow, config)
        if not fits:
            return AdmissionDecision(False, AdmissionReason.MEMORY, demand)
    if Check.DECODE_BUDGET not in ignore and not decode_budget_check(device, shadow, config):
        return AdmissionDecision(False, AdmissionReason.DECODE_BUDGET, demand)
    if Check.PREFILL_DEADLINE not in ignore and not prefill_deadline_check(
        device, shadow, now, config
    ):
        return AdmissionDecision(False, AdmissionReason.PREFILL_DEADLINE, demand)
    return AdmissionDecision(True, AdmissionReason.ADMITTED, demand)
