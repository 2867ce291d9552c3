"""Per-run metrics (issue 3, item 4; DESIGN.md §2 "Report attainment … excused … strictly").

Per request: TTFT, TPOT (mean over the tokens after the first), and SLO met when TTFT ≤ TTFT_SLO
and TPOT ≤ TPOT_SLO, once with model-loading time excused from TTFT (as the paper) and once
strictly. A third, stricter view asks every token k to meet its own deadline
`S + TTFT_SLO + TPOT_SLO·(k−1)` (load excused): the deadlines the headroom of DESIGN.md §2
schedules by. Per run: SLO-met counts, average nodes used per pool
(time-weighted over the trace window, as the artifact's per-second sampling), decode tokens per
node-second, instances per used node, GPU KV utilisation (used / allocated), resize events,
preemptions and policy decision time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from slinfer.policy.types import DeviceKind
from slinfer.sim.state import RequestState, SimRequest

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class RequestRecord:
    index: int
    model_id: str
    outcome: RequestState
    arrival_s: float
    ttft_s: float | None
    tpot_s: float | None
    excused_s: float
    preemptions: int
    slo_met: bool
    slo_met_strict: bool
    slo_met_token_deadlines: bool
    served_on: DeviceKind | None


def record_of(req: SimRequest, outcome: RequestState) -> RequestRecord:
    ttft = tpot = None
    met = strict = per_token = False
    if outcome is RequestState.DONE:
        assert req.first_token_s is not None and req.finish_s is not None
        ttft = req.first_token_s - req.arrival_s
        out = req.output_tokens
        tpot = (req.finish_s - req.first_token_s) / (out - 1) if out > 1 else 0.0
        tpot_ok = tpot <= req.tpot_slo_s + _EPS
        met = tpot_ok and ttft - req.excused_s <= req.ttft_slo_s + _EPS
        strict = tpot_ok and ttft <= req.ttft_slo_s + _EPS
        per_token = req.lateness_s - req.excused_s <= _EPS
    return RequestRecord(
        req.index,
        req.model_id,
        outcome,
        req.arrival_s,
        ttft,
        tpot,
        req.excused_s,
        req.preemptions,
        met,
        strict,
        per_token,
        req.served_on,
    )


class UsageIntegrator:
    """∫ (nodes in use) dt per pool, over the whole run and clipped to the trace window."""

    __slots__ = ("window_s", "used", "last_s", "area", "area_window")

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.used = {DeviceKind.CPU: 0, DeviceKind.GPU: 0}
        self.last_s = 0.0
        self.area = {DeviceKind.CPU: 0.0, DeviceKind.GPU: 0.0}
        self.area_window = {DeviceKind.CPU: 0.0, DeviceKind.GPU: 0.0}

    def advance(self, now: float) -> None:
        dt = now - self.last_s
        if dt <= 0:
            return
        clipped = max(min(now, self.window_s) - min(self.last_s, self.window_s), 0.0)
        for kind, n in self.used.items():
            self.area[kind] += n * dt
            self.area_window[kind] += n * clipped
        self.last_s = now

    def change(self, kind: DeviceKind, delta: int, now: float) -> None:
        self.advance(now)
        self.used[kind] += delta


@dataclass(slots=True)
class Counters:
    preemptions: int = 0
    kv_evictions: int = 0
    resize_events: int = 0
    deferred_resizes: int = 0
    loads: int = 0
    decode_tokens_cpu: int = 0
    decode_tokens_gpu: int = 0
    dispatch_calls: int = 0


@dataclass(frozen=True, slots=True)
class RunResult:
    system: str
    model: str
    models: int
    trace: str
    requests: int
    completed: int
    dropped: int
    slo_met: int
    slo_met_strict: int
    slo_met_token_deadlines: int
    avg_nodes_cpu: float
    avg_nodes_gpu: float
    decode_tokens_per_node_s_cpu: float | None
    decode_tokens_per_node_s_gpu: float | None
    instances_per_node_cpu: float | None
    instances_per_node_gpu: float | None
    kv_utilisation_gpu: float | None
    resize_events: int
    deferred_resizes: int
    preemptions: int
    kv_evictions: int
    loads: int
    dispatch_calls: int
    decision_us_mean: float
    decision_us_p99: float
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    tpot_p50_s: float | None
    tpot_p99_s: float | None
    sim_time_s: float
    sim_wall_s: float
    events: int

    @property
    def attainment(self) -> float:
        return self.slo_met / self.requests if self.requests else 1.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["attainment"] = self.attainment
        return data

    def deterministic_part(self) -> dict[str, Any]:
        """Everything but wall-clock measurements (for same-seed comparisons)."""
        data = self.to_dict()
        for key in ("sim_wall_s", "decision_us_mean", "decision_us_p99"):
            data.pop(key)
        return data


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


def mean_or_none(total: float, count: float) -> float | None:
    return total / count if count > 0 else None
