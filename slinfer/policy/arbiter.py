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
    """`decide(device, now) -> Grant | None`; stateless apart from its configuration.

    The grant goes to the runnable instance with work whose `order_key` is smallest: its
    earliest deadline (least headroom is the same order, `now` being common to all), ties
    kept in the device's instance order. The shadow run of admission orders its copies of
    the instances by the same key (shadow_run.py), so it grants exactly what this would.
    """

    __slots__ = ("margin",)

    def __init__(self, config: PolicyConfig = DEFAULT_CONFIG) -> None:
        self.margin = config.slo_margin

    def order_key(self, instance: InstanceLike, position: int) -> tuple[float, int] | None:
        """EDF key of an instance at `position` in its device's order; None: cannot run."""
        if not instance.runnable or instance.batch == 0:
            return None
        deadline = instance.earliest_deadline_s(self.margin)
        return None if deadline is None else (deadline, position)

    def decide(self, device: DeviceLike, now: float) -> Grant | None:
        """Grant the next iteration(s) on `device`; None when no instance can run."""
        best: InstanceLike | None = None
        best_key: tuple[float, int] | None = None
        for position, inst in enumerate(device.instances):
            key = self.order_key(inst, position)
            if key is not None and (best_key is None or key < best_key):
                best, best_key = inst, key
        if best is None:
            return None
        return Grant(best.instance_id, grant_iterations(best, device.kind))
