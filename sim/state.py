"""Simulated entities. They satisfy the policy protocols (`RequestLike`, `InstanceLike`,
`DeviceLike`), so the policies read them directly; only the simulator mutates them, and never
during a policy call.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from slinfer.policy.headroom import deadline_s
from slinfer.policy.kv_scaling import Ledger, OutputHistory
from slinfer.policy.model_spec import ModelSpec
from slinfer.policy.perf_model import PerfModel
from slinfer.policy.types import DeviceKind, InstancePhase


class RequestState(enum.Enum):
    WAITING = "waiting"  # at the gateway, retrying until its deadline
    ATTACHED = "attached"  # on an instance
    DONE = "done"
    DROPPED = "dropped"


class SimRequest:
    __slots__ = (
        "request_id",
        "index",
        "model_id",
        "arrival_s",
        "input_tokens",
        "target_tokens",
        "output_tokens",
        "ttft_slo_s",
        "tpot_slo_s",
        "excused_s",
        "state",
        "instance",
        "attach_s",
        "first_token_s",
        "finish_s",
        "preemptions",
        "wait_version",
        "lateness_s",
        "served_on",
    )

    def __init__(
        self,
        index: int,
        model_id: str,
        arrival_s: float,
        input_tokens: int,
        target_tokens: int,
        ttft_slo_s: float,
        tpot_slo_s: float,
    ) -> None:
        self.request_id = f"r{index}"
        self.index = index
        self.model_id = model_id
        self.arrival_s = arrival_s
        self.input_tokens = input_tokens
        self.target_tokens = target_tokens
        self.output_tokens = 0
        self.ttft_slo_s = ttft_slo_s
        self.tpot_slo_s = tpot_slo_s
        self.excused_s = 0.0
        self.state = RequestState.WAITING
        self.instance: SimInstance | None = None
        self.attach_s = 0.0
        self.first_token_s: float | None = None
        self.finish_s: float | None = None
        self.preemptions = 0
        self.wait_version = 0  # invalidates stale retry events after a re-dispatch
        # max over produced tokens k of t_k − (S + TTFT_SLO + TPOT_SLO·(k−1)): > 0 is a miss
        self.lateness_s = float("-inf")
        self.served_on: DeviceKind | None = None


@dataclass(slots=True)
class Throttle:
    """Static 2-way sharing: busy period start and device time used since (artifact billing)."""

    busy_start_s: float = 0.0
    busy_time_s: float = 0.0
    until_s: float = 0.0


class SimInstance:
    __slots__ = (
        "instance_id",
        "model_id",
        "node",
        "spec",
        "perf",
        "engine",
        "phase",
        "requests",
        "prefill",
        "context",
        "kv_pool_bytes",
        "tpot_slo_s",
        "history",
        "weights_resident",
        "load_start_s",
        "kv_granted_bytes",
        "idle_since_s",
        "version",
        "throttle",
        "releasing_pending",
        "_deadline",
        "_deadline_margin",
        "created_s",
        "pending_release_rev",
    )

    def __init__(
        self,
        instance_id: str,
        model_id: str,
        node: SimNode,
        spec: ModelSpec,
        perf: PerfModel,
        engine: PerfModel,
        history: OutputHistory,
        tpot_slo_s: float,
        now: float,
    ) -> None:
        self.instance_id = instance_id
        self.model_id = model_id
        self.node = node
        self.spec = spec
        self.perf = perf
        self.engine = engine
        self.phase = InstancePhase.LOADING
        self.requests: list[SimRequest] = []
        self.prefill: list[SimRequest] = []
        self.context = 0
        cpu = node.kind is DeviceKind.CPU
        self.kv_pool_bytes: int | None = spec.cpu_kv_pool_bytes if cpu else None
        self.tpot_slo_s = tpot_slo_s
        self.history = history
        self.weights_resident = False
        self.load_start_s: float | None = None
        self.kv_granted_bytes = 0
        self.idle_since_s: float | None = now
        self.version = 0
        self.throttle = Throttle()
        self._deadline: float | None = None
        self._deadline_margin = -1.0

    # -- InstanceLike ------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.spec.name

    @property
    def node_id(self) -> str:
        return self.node.node_id

    @property
    def prefill_queue(self) -> list[SimRequest]:
        return self.prefill

    @property
    def batch(self) -> int:
        return len(self.requests)

    @property
    def context_tokens(self) -> int:
        return self.context

    def earliest_deadline_s(self, margin: float) -> float | None:
        if margin != self._deadline_margin:
            self._deadline_margin = margin
            self._deadline = None
            self.touch()
        if self._deadline is None and self.requests:
            self._deadline = min(deadline_s(r, margin) for r in self.requests)
        return self._deadline

    def touch(self) -> None:
        """Tokens, excuses or membership changed: drop the cached earliest deadline."""
        self._deadline = None

    @property
    def planned_weights_bytes(self) -> int:
        return self.node.ledger.planned(self.instance_id).weights_bytes

    @property
    def planned_kv_bytes(self) -> int:
        return self.node.ledger.planned(self.instance_id).kv_bytes

    @property
    def runnable(self) -> bool:
        return (
            self.phase is InstancePhase.READY
            and self.weights_resident
            and self.throttle.until_s <= self.node.now
            and self.kv_shortfall_tokens() <= 0
        )

    @property
    def mean_output_tokens(self) -> float:
        return self.history.mean_tokens

    # -- helpers -----------------------------------------------------------------------------
    def kv_capacity_bytes(self) -> int:
        return self.kv_pool_bytes if self.kv_pool_bytes is not None else self.kv_granted_bytes

    def kv_shortfall_tokens(self) -> int:
        """Tokens the next iteration needs beyond the KV the engine holds (≤ 0: fits)."""
        capacity = self.kv_capacity_bytes() // self.spec.kv_bytes_per_token
        return self.context + len(self.requests) - capacity


class SimNode:
    __slots__ = (
        "node_id",
        "kind",
        "label",
        "memory_bytes",
        "max_instances",
        "instances",
        "ledger",
        "busy_until_s",
        "running",
        "now",
    )

    def __init__(
        self, node_id: str, kind: DeviceKind, label: str, memory_bytes: int, max_instances: int
    ) -> None:
        self.node_id = node_id
        self.kind = kind
        self.label = label
        self.memory_bytes = memory_bytes
        self.max_instances: int | None = max_instances
        self.instances: list[SimInstance] = []
        self.ledger = Ledger(node_id, memory_bytes)
        self.busy_until_s: float | None = None
        self.running: SimInstance | None = None
        self.now = 0.0  # the simulator's clock, mirrored for `runnable`

    @property
    def planned_bytes(self) -> int:
        return self.ledger.planned_bytes
