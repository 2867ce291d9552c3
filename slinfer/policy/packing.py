"""Packing (DESIGN.md §4): empty a lightly used node so that it can be handed back.

A node becomes a candidate once its load (CPU: Σ time slices + ρ; GPU: the share of its
memory that is planned) has stayed below `pack_below` for `pack_after_s` (T_pack, 60 s).
`PackWatch` remembers since when each node has been below; the caller feeds it every cycle.
A candidate is emptied only if the requests on it fit on other nodes *without loads*: all
requests of each model pass admission together on one resident instance of that model
elsewhere, with their recompute prefills. Idle instances are simply unloaded. Nothing is
packed while any request on the cluster waits for capacity, and no instance moved within
T_move moves again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from slinfer.policy.config import DEFAULT_CONFIG, PolicyConfig
from slinfer.policy.preemption import Destination, recently_moved, resident_destination
from slinfer.policy.time_slice import device_slices
from slinfer.policy.types import DeviceKind, DeviceLike, InstancePhase, RequestLike


@dataclass(frozen=True, slots=True)
class Move:
    """Evict `instance_id` from `source_node_id`; its requests go to `destination` (None:
    it holds none)."""

    instance_id: str
    source_node_id: str
    destination: Destination | None


@dataclass(frozen=True, slots=True)
class DrainPlan:
    node_id: str
    moves: tuple[Move, ...]


def node_load(device: DeviceLike, margin: float) -> float:
    """CPU: Σ slices + ρ (the device's time in use); GPU: planned share of its memory."""
    if device.kind is DeviceKind.CPU:
        return device_slices(device, margin) + device.prefill_share
    return device.planned_bytes / device.memory_bytes if device.memory_bytes else 1.0


@dataclass
class PackWatch:
    """Since when each node has stayed below the packing threshold (T_pack hysteresis)."""

    below_since_s: dict[str, float] = field(default_factory=dict)

    def observe(
        self, devices: Sequence[DeviceLike], now: float, config: PolicyConfig = DEFAULT_CONFIG
    ) -> None:
        seen = set()
        for device in devices:
            seen.add(device.node_id)
            if device.instances and node_load(device, config.slo_margin) < config.pack_below:
                self.below_since_s.setdefault(device.node_id, now)
            else:
                self.below_since_s.pop(device.node_id, None)
        for gone in set(self.below_since_s) - seen:
            del self.below_since_s[gone]

    def due(self, node_id: str, now: float, config: PolicyConfig = DEFAULT_CONFIG) -> bool:
        since = self.below_since_s.get(node_id)
        return since is not None and now - since >= config.pack_after_s


def pack_plan(
    devices: Sequence[DeviceLike],
    now: float,
    watch: PackWatch,
    waiting_requests: int,
    config: PolicyConfig = DEFAULT_CONFIG,
) -> DrainPlan | None:
    """The least loaded due node whose requests all fit elsewhere without loads, or None."""
    if waiting_requests > 0:
        return None
    margin = config.slo_margin
    by_id: Mapping[str, DeviceLike] = {d.node_id: d for d in devices}
    due = [d for d in devices if d.instances and watch.due(d.node_id, now, config)]
    due.sort(key=lambda d: node_load(d, margin))
    for source in due:
        plan = _empty(source, by_id, now, config)
        if plan is not None:
            return plan
    return None


def _empty(
    source: DeviceLike, devices: Mapping[str, DeviceLike], now: float, config: PolicyConfig
) -> DrainPlan | None:
    by_model: dict[str, list[RequestLike]] = {}
    for inst in source.instances:
        if inst.phase is not InstancePhase.READY or recently_moved(inst, now, config):
            return None
        by_model.setdefault(inst.model_name, []).extend(inst.requests)
    destinations: dict[str, Destination | None] = {}
    for model, requests in by_model.items():
        if not requests:
            destinations[model] = None
            continue
        found = resident_destination(devices, model, requests, source.node_id, now, config)
        if found is None:
            return None
        destinations[model] = found
    moves = tuple(
        Move(i.instance_id, source.node_id, destinations[i.model_name] if i.requests else None)
        for i in source.instances
    )
    return DrainPlan(source.node_id, moves)
