"""Keep-alive reclaim: scale an idle instance to zero (DESIGN.md §4).

Artifact defaults: a GPU instance is reclaimed 1 s after its last request leaves; a CPU
instance at once (its workers stay resident, so reuse is free).
"""

from __future__ import annotations

from dataclasses import dataclass

from slinfer.policy.types import DeviceKind, InstanceLike, InstancePhase


@dataclass(frozen=True, slots=True)
class KeepAlive:
    gpu_s: float = 1.0
    cpu_s: float = 0.0

    def __post_init__(self) -> None:
        if self.gpu_s < 0 or self.cpu_s < 0:
            raise ValueError("keep-alive times must be >= 0")

    def seconds(self, kind: DeviceKind) -> float:
        return self.gpu_s if kind is DeviceKind.GPU else self.cpu_s


def reclaim_due(
    instance: InstanceLike,
    idle_since_s: float | None,
    kind: DeviceKind,
    now: float,
    keep_alive: KeepAlive,
) -> bool:
    """True when the instance has been idle (no request, resident) for its keep-alive."""
    if instance.batch > 0 or instance.phase is not InstancePhase.READY or idle_since_s is None:
        return False
    return now >= idle_since_s + keep_alive.seconds(kind)
