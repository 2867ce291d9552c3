"""A device as a decision imagines it after a change, without copying it (DESIGN.md §4).

`Without(device, victim)`: the device once `victim` has left (its memory and its share of the
device's time freed). Satisfies `DeviceLike`.
"""

from __future__ import annotations

from collections.abc import Sequence

from slinfer.policy.types import DeviceKind, DeviceLike, InstanceLike


class Without:
    __slots__ = ("base", "gone")

    def __init__(self, base: DeviceLike, gone: InstanceLike) -> None:
        self.base = base
        self.gone = gone

    @property
    def node_id(self) -> str:
        return self.base.node_id

    @property
    def kind(self) -> DeviceKind:
        return self.base.kind

    @property
    def label(self) -> str:
        return self.base.label

    @property
    def memory_bytes(self) -> int:
        return self.base.memory_bytes

    @property
    def max_instances(self) -> int | None:
        return self.base.max_instances

    @property
    def instances(self) -> Sequence[InstanceLike]:
        gone = self.gone.instance_id
        return tuple(i for i in self.base.instances if i.instance_id != gone)

    @property
    def planned_bytes(self) -> int:
        freed = self.gone.planned_weights_bytes + self.gone.planned_kv_bytes
        return self.base.planned_bytes - freed

    @property
    def busy_until_s(self) -> float | None:
        return self.base.busy_until_s

    @property
    def prefill_share(self) -> float:
        return self.base.prefill_share

    @property
    def perf_ratio(self) -> float:
        return self.base.perf_ratio

    def load_s(self, weights_bytes: int) -> float:
        return self.base.load_s(weights_bytes)
