"""The simulator as a model of a live cluster (DESIGN.md §6: capacity, live and simulated).

A live worker measures its engine's prefill and decode tables, its load throughput and what an
iteration costs beyond the engine's own step; the scheduler runs with one `PolicyConfig`. From
those this module builds the simulator's inputs — a profile in the shared profiles' format
(with the baselines' concurrency caps derived from the same tables, as the live view does), a
cluster of the live nodes, and a trace of exactly the requests a live replay sent — so that the
same load can be replayed live and simulated and the two compared point by point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from slinfer.policy.baselines import derived_caps
from slinfer.policy.config import PolicyConfig
from slinfer.policy.keep_alive import KeepAlive
from slinfer.policy.model_spec import GIB, KIB
from slinfer.policy.perf_model import DEFAULT_SAFETY, PerfModel
from slinfer.policy.slo import SloPolicy
from slinfer.policy.systems import SystemName, system_spec
from slinfer.policy.types import DeviceKind
from slinfer.sim.cluster import ClusterSpec, NodeSpec
from slinfer.sim.driver import Simulator
from slinfer.sim.metrics import RequestRecord, RunResult
from slinfer.sim.trace import Trace, TraceRequest
from slinfer.sim.world import SimConfig

# No slot limit on a live node (memory decides), but the simulator wants one.
_LIVE_SLOTS = 256


@dataclass(frozen=True, slots=True)
class LiveModel:
    """What a live worker reported of the model it serves."""

    name: str
    weights_bytes: int
    kv_bytes_per_token: int
    kv_pool_tokens: int  # the CPU engine's pool of a new instance
    prefill_ms: Sequence[Sequence[float]]  # the worker's measured tables (profiles format)
    decode_ms: Sequence[Any]
    block_tokens: int = 16


@dataclass(frozen=True, slots=True)
class LiveSetup:
    model: LiveModel
    label: str  # the workers' hardware label
    nodes: int
    node_memory_bytes: int
    load_bytes_per_s: float  # measured; 0: loads take no time
    iteration_overhead_s: float  # measured: wall time of an iteration beyond the engine's
    keep_alive_s: float
    ttft_slo_s: float  # the deployed models' SLOs
    tpot_slo_s: float
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def profile(self) -> dict[str, Any]:
        """The shared profiles' format, with caps derived from the tables (live_view.py)."""
        m = self.model
        perf = PerfModel.from_tables(m.prefill_ms, m.decode_ms, DEFAULT_SAFETY[DeviceKind.CPU])
        caps = derived_caps(perf, self.tpot_slo_s)
        table = {
            "prefill_ms": [list(p) for p in m.prefill_ms],
            "decode_ms": [[c, [list(r) for r in rows]] for c, rows in m.decode_ms],
            "exclusive_max_concurrency": caps.exclusive,
            "shared2_max_concurrency": caps.shared2,
        }
        memory = {
            "weights_gb": m.weights_bytes / GIB,
            "kv_kb_per_token": m.kv_bytes_per_token / KIB,
            "block_size_tokens": {"cpu": m.block_tokens, "gpu": m.block_tokens},
            "cpu_kv_pool_gb": m.kv_pool_tokens * m.kv_bytes_per_token / GIB,
        }
        return {"models": {m.name: {"cpu": {self.label: table}, "memory": memory}}}

    def cluster(self) -> ClusterSpec:
        nodes = tuple(
            NodeSpec(
                f"cpu-{i}",
                DeviceKind.CPU,
                self.label,
                self.node_memory_bytes / GIB,
                0.0,
                _LIVE_SLOTS,
            )  # fmt: skip
            for i in range(self.nodes)
        )
        return ClusterSpec(
            nodes,
            gpu_load_gbps=0.0,
            cpu_load_gbps=self.load_bytes_per_s / GIB,
            keep_alive=KeepAlive(gpu_s=self.keep_alive_s, cpu_s=self.keep_alive_s),
        )

    def slo(self) -> SloPolicy:
        """A fixed TTFT, as the live deploys set it (`ttft_slo_s`)."""
        return SloPolicy(
            tpot_s=self.tpot_slo_s,
            ttft_floor_s=self.ttft_slo_s,
            ttft_tokens_per_s=1e12,
            ttft_cap_s=self.ttft_slo_s,
        )


@dataclass(frozen=True, slots=True)
class SentRequest:
    """One request a live replay sent: when, to which trace function, and its lengths."""

    arrival_s: float
    function: int
    input_tokens: int
    output_tokens: int


def trace_of(name: str, sent: Sequence[SentRequest], duration_s: float) -> Trace:
    rows = sorted(sent, key=lambda r: r.arrival_s)
    requests = tuple(
        TraceRequest(i, r.function, r.arrival_s, r.input_tokens, r.output_tokens)
        for i, r in enumerate(rows)
    )
    functions = tuple(sorted({r.function for r in rows}))
    return Trace(name, functions, requests, duration_s)


def simulate_live(
    setup: LiveSetup,
    system: SystemName,
    trace: Trace,
    pack_every_s: float = 0.0,
    seed: int = 0,
) -> tuple[RunResult, list[RequestRecord]]:
    config = SimConfig(
        system=system_spec(system),
        model=setup.model.name,
        policy=setup.policy,
        slo=setup.slo(),
        seed=seed,
        iteration_overhead_s=setup.iteration_overhead_s,
        pack_every_s=pack_every_s,
    )
    sim = Simulator(config, trace, setup.cluster(), setup.profile())
    result = sim.run()
    return result, sim.records
