"""Plain data the policies decide over (DESIGN.md §2–4; STYLE.md "Boundaries and data").

Each view is a `Protocol` with read-only members plus a frozen, slotted dataclass that
implements it. The live services build the dataclasses at their edge; the simulator passes its
own entities, which satisfy the same protocols, so that no snapshot is copied per decision. A
policy call never mutates what it is given, and nothing mutates it during the call.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from slinfer.policy.model_spec import ModelSpec
    from slinfer.policy.perf_model import PerfModel


class DeviceKind(enum.Enum):
    CPU = "cpu"
    GPU = "gpu"


class InstancePhase(enum.Enum):
    LOADING = "loading"  # weights planned but not yet resident; takes requests, cannot run
    READY = "ready"  # resident; serves (or idles until keep-alive ends)
    RELEASING = "releasing"  # evicted or reclaimed; takes nothing new


class RequestLike(Protocol):
    """A request as the policies see it. `output_tokens` counts tokens produced so far."""

    @property
    def request_id(self) -> str: ...
    @property
    def arrival_s(self) -> float: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def ttft_slo_s(self) -> float: ...
    @property
    def tpot_slo_s(self) -> float: ...
    @property
    def excused_s(self) -> float:
        """Deadline extension: model-loading time excused (as the paper counts it)."""
        ...


class InstanceLike(Protocol):
    """One model instance on one device."""

    @property
    def instance_id(self) -> str: ...
    @property
    def model_name(self) -> str: ...
    @property
    def node_id(self) -> str: ...
    @property
    def phase(self) -> InstancePhase: ...
    @property
    def requests(self) -> Sequence[RequestLike]:
        """All attached requests, including those waiting for (re)prefill."""
        ...

    @property
    def prefill_queue(self) -> Sequence[RequestLike]:
        """Attached requests awaiting (re)prefill of their prompt plus any tokens so far."""
        ...

    @property
    def batch(self) -> int: ...
    @property
    def context_tokens(self) -> int:
        """Σ (input + output) over attached requests."""
        ...

    def earliest_deadline_s(self, margin: float) -> float | None:
        """min over requests of `headroom.deadline_s(r, margin)`; None without requests."""
        ...

    @property
    def planned_weights_bytes(self) -> int:
        """Weights in the memory ledger's plan (0 before a load is planned, after an offload)."""
        ...

    @property
    def planned_kv_bytes(self) -> int: ...
    @property
    def kv_pool_bytes(self) -> int | None:
        """Fixed KV pool (CPU engines); None when the pool is elastic (GPU, kvcached)."""
        ...

    @property
    def runnable(self) -> bool:
        """Resident, KV in place, not throttled, not busy with an action: may take a grant."""
        ...

    @property
    def perf(self) -> PerfModel: ...
    @property
    def spec(self) -> ModelSpec: ...
    @property
    def tpot_slo_s(self) -> float: ...
    @property
    def mean_output_tokens(self) -> float:
        """Ō: the model's historical mean output length (§3)."""
        ...


class DeviceLike(Protocol):
    """One CPU socket or one GPU, with the instances co-located on it."""

    @property
    def node_id(self) -> str: ...
    @property
    def kind(self) -> DeviceKind: ...
    @property
    def label(self) -> str: ...
    @property
    def memory_bytes(self) -> int:
        """Usable memory (after per-instance runtime overhead)."""
        ...

    @property
    def max_instances(self) -> int | None: ...
    @property
    def instances(self) -> Sequence[InstanceLike]: ...
    @property
    def planned_bytes(self) -> int:
        """Σ planned weights + KV of the instances (the memory ledger's plan)."""
        ...

    @property
    def busy_until_s(self) -> float | None:
        """End of the iteration now running, if any."""
        ...


@dataclass(frozen=True, slots=True)
class RequestView:
    request_id: str
    arrival_s: float
    input_tokens: int
    output_tokens: int
    ttft_slo_s: float
    tpot_slo_s: float
    excused_s: float = 0.0


@dataclass(frozen=True, slots=True)
class InstanceView:
    """Snapshot of an instance; aggregates are computed from `requests`."""

    instance_id: str
    model_name: str
    node_id: str
    phase: InstancePhase
    perf: PerfModel
    spec: ModelSpec
    requests: tuple[RequestView, ...] = ()
    prefill_ids: frozenset[str] = frozenset()
    planned_weights_bytes: int = 0
    planned_kv_bytes: int = 0
    kv_pool_bytes: int | None = None
    runnable: bool = True
    tpot_slo_s: float = 0.25
    mean_output_tokens: float = 0.0

    @property
    def prefill_queue(self) -> tuple[RequestView, ...]:
        return tuple(r for r in self.requests if r.request_id in self.prefill_ids)

    @property
    def batch(self) -> int:
        return len(self.requests)

    @property
    def context_tokens(self) -> int:
        return sum(r.input_tokens + r.output_tokens for r in self.requests)

    def earliest_deadline_s(self, margin: float) -> float | None:
        from slinfer.policy.headroom import deadline_s

        return min((deadline_s(r, margin) for r in self.requests), default=None)


@dataclass(frozen=True, slots=True)
class DeviceView:
    node_id: str
    kind: DeviceKind
    label: str
    memory_bytes: int
    instances: tuple[InstanceView, ...] = ()
    max_instances: int | None = None
    busy_until_s: float | None = None
    other_planned_bytes: int = 0  # ledger entries not listed in `instances`

    @property
    def planned_bytes(self) -> int:
        own = sum(i.planned_weights_bytes + i.planned_kv_bytes for i in self.instances)
        return own + self.other_planned_bytes
