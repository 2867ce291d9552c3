"""The scheduler's per-instance request sets: the requests it owns, as the policies see them.

Requests are never stored in etcd (too hot, DESIGN.md §1): the scheduler that accepted a
request tracks its arrival, SLOs, tokens so far and where it runs. Attaching a request and
taking the decision that chose its instance happen without an `await` in between, so two
requests decided one after the other see each other.

Ō, a model's mean output length (DESIGN.md §3), is one `OutputHistory` per model shared by
every scheduler and the consolidator: one tally of completions per model in etcd
(`/slinfer/outputs/{model}`), to which each scheduler adds what it saw (outputs.py). A
scheduler's Ō is that tally plus its own completions not yet added.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from slinfer.policy.kv_scaling import OutputHistory


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
    resumed_at_s: float | None = None  # wall clock of the last re-dispatch after a preemption
    preempted_from: str | None = None  # node it was last preempted on (re-dispatch avoids it)
    first_token_at: float | None = None  # monotonic: its first token reached the gateway
    submitted_at_s: float | None = None  # wall clock of its first submission to an instance

    @property
    def prefilled(self) -> bool:
        return self.output_tokens > 0

    def lease_entry(self) -> dict[str, float | int | None]:
        """What the consolidator builds its views from (budget.py)."""
        return {
            "arrival_s": self.arrival_s,
            "ttft_slo_s": self.ttft_slo_s,
            "tpot_slo_s": self.tpot_slo_s,
            "excused_s": self.excused_s,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "resumed_at_s": self.resumed_at_s,
        }


def request_from_lease(rid: str, entry: Mapping[str, Any]) -> LiveRequest:
    """A request another scheduler (or, for the consolidator, any scheduler) holds, as its
    token-budget lease describes it (scheduler/budget.py)."""
    resumed = entry.get("resumed_at_s")
    return LiveRequest(
        request_id=rid,
        model_id="",
        arrival_s=float(entry.get("arrival_s", 0.0)),
        input_tokens=int(entry.get("input_tokens", 0)),
        ttft_slo_s=float(entry.get("ttft_slo_s", 0.0)),
        tpot_slo_s=float(entry.get("tpot_slo_s", 0.25)),
        excused_s=float(entry.get("excused_s", 0.0)),
        output_tokens=int(entry.get("output_tokens", 0)),
        resumed_at_s=float(resumed) if resumed else None,
    )


@dataclass
class Tracker:
    prior_output_tokens: float = 512.0
    by_instance: dict[str, dict[str, LiveRequest]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    # Completions not yet added to the shared tally, per model: (Σ output tokens, count).
    unpublished: dict[str, tuple[float, int]] = field(default_factory=dict)
    # The requests other scheduler replicas hold on an instance (from their leases); set by
    # a scheduler, None for the consolidator (whose tracker is built from every lease).
    foreign: Callable[[str], list[LiveRequest]] | None = None

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
        """Requests on the instance, this scheduler's and the other replicas'."""
        return len(self.load_on(instance_id))

    def load_on(self, instance_id: str) -> list[LiveRequest]:
        """Every request on the instance as far as this scheduler knows: its own, and those
        the other replicas' leases list. What admission, KV scaling and keep-alive decide on
        (`requests_on` is this scheduler's own: what its lease lists)."""
        own = self.requests_on(instance_id)
        if self.foreign is None:
            return own
        return own + self.foreign(instance_id)

    def moved_at(self, instance_id: str) -> float | None:
        """Last time a re-dispatched request joined the instance (T_move, DESIGN.md §4)."""
        return max(
            (r.resumed_at_s for r in self.load_on(instance_id) if r.resumed_at_s),
            default=None,
        )

    def history(
        self, model_id: str, shared: Mapping[str, Mapping[str, Any]] | None = None
    ) -> OutputHistory:
        """Ō of the model: the prior, the shared tally (`ClusterView.outputs`) and this
        scheduler's news."""
        tally = (shared or {}).get(model_id, {})
        total, count = self.unpublished.get(model_id, (0.0, 0))
        total += float(tally.get("total_tokens", 0.0))
        count += int(tally.get("count", 0))
        return OutputHistory(self.prior_output_tokens).merged(total, count)

    def mean_output(
        self, model_id: str, shared: Mapping[str, Mapping[str, Any]] | None = None
    ) -> float:
        return self.history(model_id, shared).mean_tokens

    def completed(self, model_id: str, output_tokens: int) -> None:
        total, count = self.unpublished.get(model_id, (0.0, 0))
        self.unpublished[model_id] = (total + output_tokens, count + 1)
