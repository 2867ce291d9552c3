"""The simulator's state: clock, event queue, nodes, instances, requests and counters.

`Simulator` (driver.py) is assembled from this base and two mixins that act on it:
`MemoryOps` (memory_ops.py: instances, the memory ledger, releases) and `ExecutionOps`
(execution.py: the arbiter, grants, completions, keep-alive).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from slinfer.policy.arbiter import Arbiter
from slinfer.policy.config import DEFAULT_CONFIG, PolicyConfig
from slinfer.policy.kv_scaling import Approval, OutputHistory
from slinfer.policy.model_spec import MODEL_ALIASES, ModelSpec
from slinfer.policy.perf_model import PerfModel
from slinfer.policy.slo import DEFAULT_SLO, SloPolicy
from slinfer.policy.systems import SystemSpec
from slinfer.policy.types import DeviceKind
from slinfer.sim.cluster import ClusterSpec
from slinfer.sim.engine_model import EngineModel, GrantPlan
from slinfer.sim.events import EventQueue, Phase
from slinfer.sim.metrics import Counters, RequestRecord, UsageIntegrator, record_of
from slinfer.sim.state import RequestState, SimInstance, SimNode, SimRequest
from slinfer.sim.trace import Trace


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One run: which system, which model type, and the knobs of the replay."""

    system: SystemSpec
    model: str
    policy: PolicyConfig = DEFAULT_CONFIG
    slo: SloPolicy = DEFAULT_SLO
    seed: int = 0
    engine_noise_cv: float = 0.0
    sample_interval_s: float = 1.0
    prior_output_tokens: float = 512.0

    def __post_init__(self) -> None:
        if self.sample_interval_s <= 0:
            raise ValueError("sample_interval_s must be > 0")
        if self.prior_output_tokens < 0:
            raise ValueError("prior_output_tokens must be >= 0")

    @property
    def model_name(self) -> str:
        return MODEL_ALIASES.get(self.model, self.model)


class World:
    def __init__(
        self, config: SimConfig, trace: Trace, cluster: ClusterSpec, profile: Mapping[str, Any]
    ) -> None:
        self.config = config
        self.trace = trace
        self.cluster = cluster
        self.system = config.system
        self.policy = config.policy
        self.spec = ModelSpec.from_profile(profile, config.model_name)
        self.now = 0.0
        self.queue = EventQueue()
        self.engine_model = EngineModel(config.seed, config.engine_noise_cv)
        self.arbiter = Arbiter(config.policy)
        kinds = {DeviceKind.CPU, DeviceKind.GPU} if self.system.use_cpu else {DeviceKind.GPU}
        self.nodes = [
            SimNode(n.node_id, n.kind, n.label, n.memory_bytes, n.slots)
            for n in cluster.nodes
            if n.kind in kinds
        ]
        self.devices = MappingProxyType({n.node_id: n for n in self.nodes})
        perf: dict[tuple[DeviceKind, str], PerfModel] = {}
        for node in self.nodes:
            key = (node.kind, node.label)
            if key not in perf and node.label in profile["models"][self.spec.name].get(
                node.kind.value, {}
            ):
                perf[key] = PerfModel.from_profile(profile, self.spec.name, node.kind, node.label)
        self.perf_by_label = MappingProxyType(perf)
        self.engine_by_label = {k: p.with_safety(1.0) for k, p in perf.items()}
        self.load_free_kinds = cluster.load_free_kinds()
        self.histories: dict[str, OutputHistory] = {}
        self.by_model: dict[str, list[SimInstance]] = {}
        self.rr_cursor: dict[str, int] = {}
        self.instances: dict[str, SimInstance] = {}
        self.grants: dict[str, GrantPlan] = {}  # node id -> the grant running on it
        self.plans_pending: dict[str, Approval] = {}  # instance id -> approval for its next gap
        self.counters = Counters()
        self.records: list[RequestRecord] = []
        self.outcomes: dict[int, RequestState] = {}
        self.decision_s: list[float] = []
        self.usage = UsageIntegrator(trace.duration_s)
        self._next_instance = 0
        self.requests = [self._request(r.index, r.function, r) for r in trace.requests]

    def _request(self, index: int, function: int, r: Any) -> SimRequest:
        model_id = f"m{function}"
        if model_id not in self.histories:
            self.histories[model_id] = OutputHistory(self.config.prior_output_tokens)
            self.by_model[model_id] = []
            self.rr_cursor[model_id] = 0
        slo = self.config.slo
        return SimRequest(
            index,
            model_id,
            r.arrival_s,
            r.input_tokens,
            r.output_tokens,
            slo.ttft_s(r.input_tokens),
            slo.tpot_s,
        )

    def new_instance_id(self, model_id: str, node: SimNode) -> str:
        self._next_instance += 1
        return f"i{self._next_instance}:{model_id}@{node.node_id}"

    def push(self, time_s: float, phase: Phase, payload: Any) -> None:
        self.queue.push(time_s, phase, payload)

    def finalize_request(self, req: SimRequest, outcome: RequestState) -> None:
        """Every request leaves exactly once: completed, or dropped at its deadline."""
        if req.index in self.outcomes:
            raise AssertionError(f"{req.request_id} left twice ({self.outcomes[req.index]})")
        req.state = outcome
        self.outcomes[req.index] = outcome
        self.records.append(record_of(req, outcome))

    # Implemented by the mixins (see module docstring).
    def kick(self, node: SimNode) -> None:
        raise NotImplementedError

    def memory_tick(self, inst: SimInstance) -> None:
        raise NotImplementedError

    def release(self, inst: SimInstance, preempted: bool) -> None:
        raise NotImplementedError

    def requeue(self, req: SimRequest, delay_s: float = 0.0) -> None:
        raise NotImplementedError

    def became_idle(self, inst: SimInstance) -> None:
        raise NotImplementedError
