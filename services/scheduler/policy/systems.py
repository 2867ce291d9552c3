"""Registry of the systems compared in the paper's evaluation (DESIGN.md §6), keyed by enum.

- `sllm`: GPUs only; one instance per device; concurrency caps; round-robin routing.
- `sllm+c`: `sllm` with the CPU nodes added.
- `sllm+c+s`: `sllm+c` with static 2-way sharing (each instance ≤ half the device time).
- `slinfer-gpu`: token-level sharing (§2), elastic KV (§3), busiest-first routing,
  most-loaded placement and preemption (§4), on the GPUs only.
- `slinfer`: the same on CPUs and GPUs.
- `slinfer-no-defrag`: `slinfer` with load-balancing order (least busy / least loaded first)
  and no preemption.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from slinfer.policy.errors import UnknownSystem


class SystemName(enum.Enum):
    SLLM = "sllm"
    SLLM_C = "sllm+c"
    SLLM_C_S = "sllm+c+s"
    SLINFER_GPU = "slinfer-gpu"
    SLINFER = "slinfer"
    SLINFER_NO_DEFRAG = "slinfer-no-defrag"


class Sharing(enum.Enum):
    EXCLUSIVE = "exclusive"  # one instance per device (ServerlessLLM)
    STATIC_2WAY = "static_2way"  # ≤ 2 instances per device, each throttled to half its time
    TOKEN = "token"  # SLINFER: token-level time sharing with shadow validation


@dataclass(frozen=True, slots=True)
class SystemSpec:
    name: SystemName
    use_cpu: bool
    sharing: Sharing
    defrag: bool = True  # busiest-first routing and most-loaded placement (else the reverse)
    preempt: bool = False

    @property
    def is_baseline(self) -> bool:
        return self.sharing is not Sharing.TOKEN

    @property
    def shares(self) -> int | None:
        """Instances a device may hold under static allocation; None under token sharing."""
        return {Sharing.EXCLUSIVE: 1, Sharing.STATIC_2WAY: 2, Sharing.TOKEN: None}[self.sharing]


SYSTEMS: Mapping[SystemName, SystemSpec] = MappingProxyType(
    {
        SystemName.SLLM: SystemSpec(SystemName.SLLM, False, Sharing.EXCLUSIVE),
        SystemName.SLLM_C: SystemSpec(SystemName.SLLM_C, True, Sharing.EXCLUSIVE),
        SystemName.SLLM_C_S: SystemSpec(SystemName.SLLM_C_S, True, Sharing.STATIC_2WAY),
        SystemName.SLINFER_GPU: SystemSpec(
            SystemName.SLINFER_GPU, False, Sharing.TOKEN, preempt=True
        ),
        SystemName.SLINFER: SystemSpec(SystemName.SLINFER, True, Sharing.TOKEN, preempt=True),
        SystemName.SLINFER_NO_DEFRAG: SystemSpec(
            SystemName.SLINFER_NO_DEFRAG, True, Sharing.TOKEN, defrag=False, preempt=False
        ),
    }
)


def system_spec(name: SystemName | str) -> SystemSpec:
    if isinstance(name, str):
        try:
            name = SystemName(name)
        except ValueError as err:
            known = ", ".join(s.value for s in SystemName)
            raise UnknownSystem(f"unknown system {name!r}; known: {known}") from err
    return SYSTEMS[name]
