"""Placing a new instance (DESIGN.md §4, "Reactive bin-packing").

Pools in order CPU then GPU (CPU first whenever it can meet the SLO, which shadow validation
decides). Within a pool, nodes that already hold instances come first, *most* loaded first
(CPU by Σ time slices, GPU by planned memory), then empty nodes; without defragmentation the
loaded nodes are taken least loaded first (empty nodes still last, as in the artifact). The
first node whose free slot validates wins. Baselines take the first node with room under their
static allocation (exclusive, or 2-way).

SLINFER never places a second instance of a model on a device that already holds one (ready
or loading): instances on a device take turns, so the second would cost its own iterations
and a second copy of the weights where joining the first costs one more row of its batch.
A request the resident instance cannot admit is not admitted by its twin either; without
this rule, a twin's excused load time could make it look admissible.
"""

from __future__ import annotations

from dataclasses import dataclass

from slinfer.policy.admission import AdmissionReason, shadow_validate
from slinfer.policy.baselines import (
    accepts_instance,
    cap_admit,
    device_sized_kv_bytes,
)
from slinfer.policy.config import DEFAULT_CONFIG, PolicyConfig
from slinfer.policy.kv_scaling import KvAllocation, plan_kv
from slinfer.policy.systems import SystemSpec
from slinfer.policy.time_slice import device_slices
from slinfer.policy.types import (
    DeviceKind,
    DeviceLike,
    InstancePhase,
    InstanceView,
    RequestLike,
)
from slinfer.policy.view import DispatchView


@dataclass(frozen=True, slots=True)
class PlacementDecision:
    """`node_id` None: no node can take a new instance. `kv_bytes`: its first KV allocation."""

    node_id: str | None
    kv_bytes: int | None = None
    reason: AdmissionReason | None = None


def node_load(device: DeviceLike, margin: float) -> float:
    """CPU: Σ time slices; GPU: planned bytes."""
    if device.kind is DeviceKind.CPU:
        return device_slices(device, margin)
    return float(device.planned_bytes)


def placement_order(devices: list[DeviceLike], defrag: bool, margin: float) -> list[DeviceLike]:
    used = [d for d in devices if d.instances]
    empty = [d for d in devices if not d.instances]
    used.sort(key=lambda d: node_load(d, margin), reverse=defrag)
    return used + empty


def new_instance(view: DispatchView, device: DeviceLike, now: float) -> InstanceView | None:
    """The empty instance a placement would create on `device`; None if it cannot host it.

    It runs at the device's calibrated speed and, unless the device's kind starts instances
    resident, joins the device at its predicted load time.
    """
    perf = view.perf_by_label.get((device.kind, device.label))
    if perf is None:
        return None
    if device.perf_ratio != 1.0:
        perf = perf.with_safety(perf.safety * device.perf_ratio)
    if device.max_instances is not None and len(device.instances) >= device.max_instances:
        return None
    resident = device.kind in view.load_free_kinds
    cpu = device.kind is DeviceKind.CPU
    return InstanceView(
        instance_id=f"<new:{view.model_id}@{device.node_id}>",
        model_name=view.model.name,
        node_id=device.node_id,
        phase=InstancePhase.READY if resident else InstancePhase.LOADING,
        perf=perf,
        spec=view.model,
        kv_pool_bytes=view.model.cpu_kv_pool_bytes if cpu else None,
        tpot_slo_s=view.tpot_slo_s,
        mean_output_tokens=view.mean_output_tokens,
        ready_at_s=None if resident else now + device.load_s(view.model.weights_bytes),
    )


def first_kv_bytes(
    device: DeviceLike,
    view: DispatchView,
    system: SystemSpec,
    request: RequestLike,
    config: PolicyConfig,
) -> int:
    """A new instance's first KV: the CPU engine's fixed pool, the baselines' device-sized
    pool, or SLINFER's forward-looking allocation (`plan_kv` from nothing)."""
    model = view.model
    if device.kind is DeviceKind.CPU:
        return model.cpu_kv_pool_bytes
    if system.is_baseline:
        return device_sized_kv_bytes(device, model, system)
    alloc = KvAllocation(
        kv_bytes_per_token=model.kv_bytes_per_token,
        block_tokens=model.block_tokens(device.kind),
        allocated_bytes=0,
        node_free_bytes=device.memory_bytes - device.planned_bytes - model.weights_bytes,
    )
    target = plan_kv((request,), view.mean_output_tokens, alloc, config)
    return target or 0


def place(
    view: DispatchView,
    request: RequestLike,
    now: float,
    system: SystemSpec,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> PlacementDecision:
    kinds = [DeviceKind.CPU, DeviceKind.GPU] if system.use_cpu else [DeviceKind.GPU]
    hosting = set()
    if not system.is_baseline:
        hosting = {c.node_id for c in view.candidates if c.phase is not InstancePhase.RELEASING}
    last: AdmissionReason | None = None
    for kind in kinds:
        pool = [d for d in view.devices.values() if d.kind is kind and d.node_id not in hosting]
        for device in placement_order(pool, system.defrag, config.slo_margin):
            template = new_instance(view, device, now)
            if template is None:
                continue
            if system.is_baseline:
                if not accepts_instance(device, view.model, system):
                    continue
                decision = cap_admit(device, template, system)
            else:
                decision = shadow_validate(device, template, request, now, config)
            if decision.admitted:
                kv = first_kv_bytes(device, view, system, request, config)
                return PlacementDecision(device.node_id, kv, decision.reason)
            last = decision.reason
    return PlacementDecision(None, reason=last)
