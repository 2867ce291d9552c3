"""Time slice of an instance (DESIGN.md §2): `decode_time(avg_ctx, batch) / TPOT_SLO`.

Co-located instances alternate on one device, so the sum of their slices must stay ≤ 1 for
every instance to produce a token per TPOT. The scheduler's token-budget lease records the
slice and the batch it was computed for (`Lease`).
"""

from __future__ import annotations

from dataclasses import dataclass

from slinfer.policy.types import DeviceLike, InstanceLike


@dataclass(frozen=True, slots=True)
class Lease:
    """Token budget of one instance, as the scheduler records it (etcd, with a TTL)."""

    instance_id: str
    time_slice: float
    batch: int


def time_slice(instance: InstanceLike, margin: float = 1.0) -> float:
    """Fraction of the device the instance needs to meet its TPOT with its current batch."""
    batch = instance.batch
    if batch == 0:
        return 0.0
    decode_s = instance.perf.decode_s(instance.context_tokens / batch, batch)
    return decode_s / (margin * instance.tpot_slo_s)


def lease(instance: InstanceLike, margin: float = 1.0) -> Lease:
    return Lease(instance.instance_id, time_slice(instance, margin), instance.batch)


def device_slices(
    device: DeviceLike, margin: float = 1.0, replace: InstanceLike | None = None
) -> float:
    """Σ slices on the device; `replace` stands in for the instance with the same id."""
    total = 0.0
    replaced = False
    for inst in device.instances:
        if replace is not None and inst.instance_id == replace.instance_id:
            total += time_slice(replace, margin)
            replaced = True
        else:
            total += time_slice(inst, margin)
    if replace is not None and not replaced:
        total += time_slice(replace, margin)
    return total
