"""Keep-alive reclaim: scale an idle instance to zero (DESIGN.md §4).

An instance with no request, resident, idle for its keep-alive is unloaded. The keep-alive is
the model's own (live: the deploy's `keep_alive_s`, else the scheduler's default) or, in the
simulator, the artifact's per-device default (`KeepAlive`: a GPU instance 1 s after its last
request leaves; a CPU instance at once, its workers staying resident so reuse is free).
"""

from __future__ import annotations

from dataclasses import dataclass

from slinfer.policy.types import DeviceKind, InstancePhase


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
    batch: int,
    phase: InstancePhase,
    idle_since_s: float | None,
    keep_alive_s: float,
    now: float,
) -> bool:
    """True when an instance has been idle (no request, resident) for its keep-alive."""
    if batch > 0 or phase is not InstancePhase.READY or idle_since_s is None:
        return False
    return now >= idle_since_s + keep_alive_s
