"""The scheduler's per-instance request sets: the requests it owns, as the policies see them.

Requests are never stored in etcd (too hot, DESIGN.md §1): the scheduler that accepted a
request tracks its arrival, SLOs, tokens so far and where it runs. Attaching a request and
taking the decision that chose its instance happen without an `await` in between, so two
requests decided one after the other see each other.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class LiveRequest:
    """Satisfies the policy core's `RequestLike`."""

    request_id: str
    model_id: str
    arrival_s: float  # wall clock, shared with the workers
    input_tokens: int
    ttft_slo_s: float
    tpot_slo_s: float
    excused_s: float = 0.0  # model-loading time this request waited (paper's SLO view)
    output_tokens: int = 0
    instance_id: str | None = None
    resumed_at_s: float = 0.0  # wall clock of the last re-dispatch after a preemption
    preempted_from: str | None = None  # node it was last preempted on (re-dispatch avoids it)
    submitted_at_s: float | None = None  # wall clock of its first submission to an instance

    @property
    def prefilled(self) -> bool:
        return self.output_tokens > 0

    def lease_entry(self) -> dict[str, float]:
        return {
            "arrival_s": self.arrival_s,
            "ttft_slo_s": self.ttft_slo_s,
            "tpot_slo_s": self.tpot_slo_s,
            "excused_s": self.excused_s,
            # For the consolidator's view (it rebuilds the policy's requests from leases).
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }


@dataclass
class OutputMean:
    """Ō: the model's mean output length, learned from completed requests (DESIGN.md §3)."""

    prior: float
    total: float = 0.0
    count: int = 0

    def add(self, tokens: int) -> None:
        self.total += tokens
        self.count += 1

    @property
    def value(self) -> float:
        return self.total / self.count if self.count else self.prior


@dataclass
class Tracker:
    prior_output_tokens: float = 128.0
    by_instance: dict[str, dict[str, LiveRequest]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    outputs: dict[str, OutputMean] = field(default_factory=dict)

    def attach(self, request: LiveRequest, instance_id: str) -> None:
        self.detach(request)
        request.instance_id = instance_id
        self.by_instance[instance_id][request.request_id] = request

    def detach(self, request: LiveRequest) -> str | None:
        iid = request.instance_id
        if iid is None:
            return None
        reqs = self.by_instance.get(iid)
        if reqs is not None:
            reqs.pop(request.request_id, None)
            if not reqs:
                self.by_instance.pop(iid, None)
        request.instance_id = None
        return iid

    def requests_on(self, instance_id: str) -> list[LiveRequest]:
        return list(self.by_instance.get(instance_id, {}).values())

    def busy(self, instance_id: str) -> int:
        return len(self.by_instance.get(instance_id, {}))

    def mean_output(self, model_id: str) -> float:
        m = self.outputs.get(model_id)
        return m.value if m else self.prior_output_tokens

    def completed(self, model_id: str, output_tokens: int) -> None:
        self.outputs.setdefault(model_id, OutputMean(self.prior_output_tokens)).add(output_tokens)
