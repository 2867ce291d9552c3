"""Iteration arbiter: earliest deadline first, with multi-iteration grants (DESIGN.md §2).

The next grant goes to the runnable instance holding the request with the least headroom.
A grant covers 1 iteration during prefill and on CPU; on GPU decode it covers the model's
`gpu_decode_grant` (artifact: 4 for 3B, 2 for 7B/8B, 1 for 13B) to amortise arbitration.
"""

from __future__ import annotations

from dataclasses import dataclass

from slinfer.policy.config import DEFAULT_CONFIG, PolicyConfig
from slinfer.policy.types import DeviceKind, DeviceLike, InstanceLike


@dataclass(frozen=True, slots=True)
class Grant:
    instance_id: str
    iterations: int


def grant_iterations(instance: InstanceLike, kind: DeviceKind) -> int:
    if kind is DeviceKind.CPU or instance.prefill_queue:
        return 1
    return instance.spec.gpu_decode_grant


class Arbiter:
    """`decide(device, now) -> Grant | None`; stateless apart from its configuration."""

    __slots__ = ("_margin",)

    def __init__(self, config: PolicyConfig = DEFAULT_CONFIG) -> None:
        self._margin = config.slo_margin

    def decide(self, device: DeviceLike, now: float) -> Grant | None:
        """Grant the next iteration(s) on `device`; None when no instance can run.

        Least headroom is the same order as earliest deadline (`now` is common to all), so the
        comparison is on deadlines; ties keep the device's instance order.
        """
        best: InstanceLike | None = None
        best_deadline = 0.0
        for inst in device.instances:
            if not inst.runnable or inst.batch == 0:
                continue
            deadline = inst.earliest_deadline_s(self._margin)
            if deadline is None:
                continue
            if best is None or deadline < best_deadline:
                best, best_deadline = inst, deadline
        if best is None:
            return None
        return Grant(best.instance_id, grant_iterations(best, device.kind))
