"""Build small simulations from synthetic traces."""

from __future__ import annotations

from slinfer.policy.systems import SystemName, system_spec
from slinfer.sim.cluster import ClusterSpec, default_cluster
from slinfer.sim.driver import Simulator
from slinfer.sim.paths import load_profiles
from slinfer.sim.trace import Trace, TraceRequest
from slinfer.sim.world import SimConfig


def synthetic_trace(rows: list[tuple[float, int, int, int]], duration_s: float = 60.0) -> Trace:
    """rows: (arrival_s, function, input_tokens, output_tokens)."""
    ordered = sorted(rows)
    requests = tuple(TraceRequest(n, f, t, i, o) for n, (t, f, i, o) in enumerate(ordered))
    functions = tuple(sorted({f for _, f, _, _ in ordered}))
    return Trace("synthetic", functions, requests, duration_s)


def make_sim(
    trace: Trace,
    system: SystemName = SystemName.SLINFER,
    model: str = "7b",
    cpu_nodes: int = 1,
    gpu_nodes: int = 1,
    cluster: ClusterSpec | None = None,
    seed: int = 0,
    noise_cv: float = 0.0,
) -> Simulator:
    profile = load_profiles()
    cluster = cluster or default_cluster(model, profile, cpu_nodes, gpu_nodes)
    config = SimConfig(system_spec(system), model, seed=seed, engine_noise_cv=noise_cv)
    return Simulator(config, trace, cluster, profile)
