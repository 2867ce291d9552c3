"""The worker's in-process iteration arbiter: the policy core's EDF `Arbiter` on live data.

Per device, before every grant, the arbiter builds the policy's plain view of the co-located
instances (their requests' deadlines, prefill queues) and asks `Arbiter.decide` which instance
runs next and for how many iterations (DESIGN.md §2). Deadlines reach the worker one way: in
the request's Submit, from the scheduler that admitted it (arrival, SLOs, excused load time);
the worker counts the tokens itself. If that scheduler dies, the worker finishes what it
admitted on the same deadlines. Every grant is logged (bounded) and the arbiter's own cost is
measured. The margin is the cluster's `PolicyConfig` (services/common/policy_config.py).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from slinfer.policy import (
    DEFAULT_CONFIG,
    Arbiter,
    DeviceKind,
    DeviceView,
    InstancePhase,
    InstanceView,
    PolicyConfig,
    RequestView,
    SloPolicy,
)
from slinfer.services.common.records import InstanceState
from slinfer.services.worker import metrics
from slinfer.services.worker.instance import Instance

GRANT_LOG_SIZE = 4096


@dataclass
class TrackedRequest:
    """A request's headroom inputs as the worker knows them (updated as tokens stream)."""

    request_id: str
    arrival_s: float  # wall clock
    input_tokens: int
    ttft_slo_s: float
    tpot_slo_s: float
    excused_s: float = 0.0
    output_tokens: int = 0
    prefilled: bool = False

    @classmethod
    def from_submit(cls, rid: str, req: Any) -> TrackedRequest:
        """From a worker SubmitRequest; missing deadline fields take the default SLOs."""
        n_in = len(req.prompt_token_ids) + len(req.resumed_token_ids)
        d = req.deadline
        default = SloPolicy()
        return cls(
            request_id=rid,
            arrival_s=d.arrival_unix_s or time.time(),
            input_tokens=n_in,
            ttft_slo_s=d.ttft_slo_s or default.ttft_s(n_in),
            tpot_slo_s=d.tpot_slo_s or default.tpot_s,
            excused_s=d.excused_s,
            output_tokens=len(req.resumed_token_ids),
        )

    def view(self) -> RequestView:
        return RequestView(
            request_id=self.request_id,
            arrival_s=self.arrival_s,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            ttft_slo_s=self.ttft_slo_s,
            tpot_slo_s=self.tpot_slo_s,
            excused_s=self.excused_s,
        )


@dataclass(frozen=True, slots=True)
class GrantRecord:
    at_s: float  # wall clock
    instance_id: str
    iterations: int
    deadline_s: float  # the earliest deadline that won the grant
    # (instance, earliest deadline) of every other instance that had work at that moment
    others: tuple[tuple[str, float], ...] = ()


class DeviceArbiter:
    def __init__(
        self,
        node_id: str,
        kind: DeviceKind,
        label: str,
        memory_bytes: int,
        config: PolicyConfig = DEFAULT_CONFIG,
    ):
        self.node_id, self.kind, self.label, self.memory_bytes = node_id, kind, label, memory_bytes
        self.configure(config)
        self.grant_log: deque[GrantRecord] = deque(maxlen=GRANT_LOG_SIZE)
        self.decide_s_total = 0.0
        self.decisions = 0

    def _instance_view(self, inst: Instance) -> InstanceView | None:
        if inst.perf is None or inst.spec is None or not inst.requests:
            return None
        requests = tuple(r.view() for r in inst.requests.values())
        return InstanceView(
            instance_id=inst.instance_id,
            model_name=inst.model_id,
            node_id=self.node_id,
            phase=InstancePhase.READY,
            perf=inst.perf,
            spec=inst.spec,
            requests=requests,
            prefill_ids=frozenset(r.request_id for r in inst.requests.values() if not r.prefilled),
            runnable=inst.state in (InstanceState.READY, InstanceState.DRAINING),
            tpot_slo_s=min(r.tpot_slo_s for r in requests),
        )

    def choose(self, instances: Iterable[Instance]) -> tuple[Instance, int] | None:
        """The instance to run next and how many iterations it is granted."""
        t0 = time.perf_counter()
        now = time.time()
        by_id: dict[str, Instance] = {}
        views = []
        for inst in instances:
            if inst.engine is None:
                continue
            view = self._instance_view(inst)
            if view is not None:
                views.append(view)
                by_id[inst.instance_id] = inst
        grant = None
        if views:
            device = DeviceView(
                self.node_id, self.kind, self.label, self.memory_bytes, tuple(views)
            )
            grant = self.policy.decide(device, now)
        elapsed = time.perf_counter() - t0
        self.decide_s_total += elapsed
        self.decisions += 1
        metrics.ARBITER_SECONDS.observe(elapsed)
        if grant is None:
            return None
        margin = self.policy.margin
        deadlines = {v.instance_id: v.earliest_deadline_s(margin) or now for v in views}
        self.grant_log.append(
            GrantRecord(
                now,
                grant.instance_id,
                grant.iterations,
                deadlines[grant.instance_id],
                tuple((i, d) for i, d in deadlines.items() if i != grant.instance_id),
            )
        )
        metrics.GRANTS.labels(by_id[grant.instance_id].model_id).inc()
        return by_id[grant.instance_id], grant.iterations

    def configure(self, config: PolicyConfig) -> None:
        """Decide with the cluster's policy constants from now on."""
        self.policy = Arbiter(config)
