"""One simulated run, from files to a `RunResult` (the API bench/ and tests use)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slinfer.policy.config import DEFAULT_CONFIG, PolicyConfig
from slinfer.policy.systems import SystemName, system_spec
from slinfer.sim.cluster import ClusterSpec, default_cluster, load_cluster
from slinfer.sim.driver import Simulator
from slinfer.sim.metrics import RunResult
from slinfer.sim.paths import default_trace, load_profiles
from slinfer.sim.trace import load_trace
from slinfer.sim.world import SimConfig


@dataclass(frozen=True, slots=True)
class RunSpec:
    system: SystemName
    model: str = "7b"
    models: int | None = None
    trace: Path | None = None
    duration_s: float | None = None
    rate_scale: float = 1.0
    cluster: Path | None = None
    cpu_nodes: int = 4
    gpu_nodes: int = 4
    gpu_load_gbps: float | None = None
    cpu_load_gbps: float | None = None
    seed: int = 0
    engine_noise_cv: float = 0.0
    policy: PolicyConfig = DEFAULT_CONFIG


def build_cluster(spec: RunSpec) -> ClusterSpec:
    profile = load_profiles()
    if spec.cluster is not None:
        cluster = load_cluster(spec.cluster, spec.model, profile)
    else:
        cluster = default_cluster(spec.model, profile, spec.cpu_nodes, spec.gpu_nodes)
    if spec.gpu_load_gbps is not None or spec.cpu_load_gbps is not None:
        cluster = ClusterSpec(
            cluster.nodes,
            cluster.gpu_load_gbps if spec.gpu_load_gbps is None else spec.gpu_load_gbps,
            cluster.cpu_load_gbps if spec.cpu_load_gbps is None else spec.cpu_load_gbps,
            cluster.keep_alive,
        )
    return cluster


def simulate(spec: RunSpec) -> tuple[RunResult, Simulator]:
    profile = load_profiles()
    trace = load_trace(spec.trace or default_trace(), spec.models, spec.duration_s, spec.rate_scale)
    config = SimConfig(
        system=system_spec(spec.system),
        model=spec.model,
        policy=spec.policy,
        seed=spec.seed,
        engine_noise_cv=spec.engine_noise_cv,
    )
    sim = Simulator(config, trace, build_cluster(spec), profile)
    return sim.run(), sim


def run(spec: RunSpec) -> RunResult:
    return simulate(spec)[0]
