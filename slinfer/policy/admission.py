"""Admission (DESIGN.md §2, "Admission"): may these requests join this instance now?

The default (`Admission.SHADOW`) passes only if, with the requests added, all hold:
(1) memory: the forward-looking KV demand fits (§3): within the fixed pool of a CPU engine,
    or within the node's memory next to the other instances' planned footprints (GPU);
(2) steady state: Σ time slices + ρ ≤ 1, ρ being the share of the device's time prefills
    took over the last 30 s (calibration.py): decode alone is not the device's whole load;
(3) shadow run: the device run forward by the workers' own arbiter with predicted iteration
    times misses no token deadline (shadow_run.py).

`Admission.PAPER` is the first design, kept so the artifact's Fig. 22 can be reproduced:
(1), then (2') the decode budget Σ slices ≤ 1 and (3') an earliest-deadline-first simulation
of the device's pending prefills from the moment it is next free, which misses no deadline at
or after the new request's position. Each instance is keyed on the earliest deadline of *all*
its requests (the artifact's rule: a prefill also delays the decoders beside it). Instances
still loading are left out, the target included (their wait is excused, as the paper counts
it); the artifact's pre-started CPU workers start resident, so they are always checked.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from slinfer.policy.config import DEFAULT_CONFIG, Admission, PolicyConfig
from slinfer.policy.iteration import prefill_iteration_s
from slinfer.policy.kv_scaling import kv_demand
from slinfer.policy.shadow import ShadowInstance
from slinfer.policy.shadow_run import shadow_run
from slinfer.policy.time_slice import device_slices
from slinfer.policy.types import DeviceLike, InstanceLike, InstancePhase, RequestLike

_EPS = 1e-9  # Σ slices is a float sum; a budget filled exactly still fits


class AdmissionReason(enum.Enum):
    ADMITTED = "admitted"
    NOT_ACCEPTING = "not_accepting"  # the instance is being released
    MEMORY = "memory"
    STEADY_STATE = "steady_state"  # Σ slices + ρ > 1
    SHADOW_RUN = "shadow_run"  # a token would miss its deadline
    DECODE_BUDGET = "decode_budget"  # paper: Σ slices > 1
    PREFILL_DEADLINE = "prefill_deadline"  # paper: a prefill would miss its deadline
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


def steady_state_check(
    device: DeviceLike, shadow: InstanceLike, config: PolicyConfig = DEFAULT_CONFIG
) -> bool:
    slices = device_slices(device, config.slo_margin, replace=shadow)
    return slices + device.prefill_share <= 1.0 + _EPS


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
    t = now if device.busy_until_s is None else max(now, device.busy_until_s)
    entered = False
    for ddl, duration, is_target in entries:
        entered = entered or is_target
        t += duration
        if entered and t > ddl:
            return False
    return True


def _add_prefill_entry(
    entries: list[tuple[float, float, bool]], inst: InstanceLike, margin: float, is_target: bool
) -> None:
    if inst.phase is InstancePhase.LOADING or not inst.prefill_queue:
        return
    ddl = inst.earliest_deadline_s(margin)
    if ddl is not None:
        entries.append((ddl, prefill_iteration_s(inst.perf, inst.prefill_queue), is_target))


def validate_group(
    device: DeviceLike,
    instance: InstanceLike,
    added: Sequence[RequestLike],
    now: float,
    config: PolicyConfig = DEFAULT_CONFIG,
    excuse_load: bool = True,
) -> AdmissionDecision:
    """May `added` join `instance` on `device` at `now`? `excuse_load=False` for requests a
    preemption moves: the destination's load time counts against their deadlines (§4)."""
    if instance.phase is InstancePhase.RELEASING:
        return AdmissionDecision(False, AdmissionReason.NOT_ACCEPTING)
    shadow = ShadowInstance(instance, tuple(added))
    fits, demand = memory_check(device, shadow, config)
    if not fits:
        return AdmissionDecision(False, AdmissionReason.MEMORY, demand)
    if config.admission is Admission.PAPER:
        if not decode_budget_check(device, shadow, config):
            return AdmissionDecision(False, AdmissionReason.DECODE_BUDGET, demand)
        if not prefill_deadline_check(device, shadow, now, config):
            return AdmissionDecision(False, AdmissionReason.PREFILL_DEADLINE, demand)
        return AdmissionDecision(True, AdmissionReason.ADMITTED, demand)
    if not steady_state_check(device, shadow, config):
        return AdmissionDecision(False, AdmissionReason.STEADY_STATE, demand)
    if not shadow_run(device, instance, added, now, config, excuse_load).ok:
        return AdmissionDecision(False, AdmissionReason.SHADOW_RUN, demand)
    return AdmissionDecision(True, AdmissionReason.ADMITTED, demand)


def shadow_validate(
    device: DeviceLike,
    instance: InstanceLike,
    request: RequestLike,
    now: float,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> AdmissionDecision:
    """May `request` join `instance` on `device` at `now`? (DESIGN.md §2)."""
    return validate_group(device, instance, (request,), now, config)
