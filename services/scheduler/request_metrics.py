"""One request's timeline at the gateway, recorded as vLLM-named metrics (metrics.py).

A request counts as waiting from its arrival until its first token (capacity, cold start,
prefill), then as running until it ends, however it ends. Times are monotonic seconds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from slinfer.services.scheduler import metrics

Phase = Literal["waiting", "running"]
_GAUGES = {"waiting": metrics.WAITING, "running": metrics.RUNNING}


@dataclass
class ActiveRequests:
    """The gateway's requests by model and phase: the gauges and GetClusterStatus read it."""

    waiting: Counter[str] = field(default_factory=Counter)
    running: Counter[str] = field(default_factory=Counter)

    def add(self, model_id: str, phase: Phase, n: int) -> None:
        getattr(self, phase)[model_id] += n
        _GAUGES[phase].labels(model_id).inc(n)

    def total(self, phase: Phase) -> int:
        return sum(getattr(self, phase).values())


@dataclass
class RequestClock:
    model_id: str
    arrival_s: float
    active: ActiveRequests
    prompt_tokens: int = 0
    first_at: float | None = None
    last_at: float | None = None
    submitted: bool = False
    _open: bool = field(default=False, repr=False)

    def start(self) -> None:
        """The request passed validation: it waits for its first token from now."""
        self.active.add(self.model_id, "waiting", 1)
        self._open = True

    def on_queued(self, queue_s: float | None) -> None:
        """Arrival to the first submission to an instance (re-dispatches are not queue time);
        recorded once, when the first answer shows the submission happened."""
        if not self.submitted and queue_s is not None:
            self.submitted = True
            metrics.QUEUE_TIME.labels(self.model_id).observe(max(queue_s, 0.0))

    def on_tokens(self, n: int, now: float) -> None:
        if n <= 0:
            return
        if self.first_at is None:
            self.first_at = now
            metrics.TTFT.labels(self.model_id).observe(now - self.arrival_s)
            metrics.PROMPT_TOKENS.labels(self.model_id).inc(self.prompt_tokens)
            if self._open:
                self.active.add(self.model_id, "waiting", -1)
                self.active.add(self.model_id, "running", 1)
            n_gaps = n - 1
        else:
            n_gaps = n
        if n_gaps and self.last_at is not None:
            gap = (now - self.last_at) / n_gaps
            itl = metrics.INTER_TOKEN.labels(self.model_id)
            for _ in range(n_gaps):
                itl.observe(gap)
        self.last_at = now
        metrics.GENERATION_TOKENS.labels(self.model_id).inc(n)

    def finish(self, finish_reason: str, completion_tokens: int, now: float) -> float:
        """Records e2e latency and TPOT; returns the TPOT (0 with fewer than two tokens)."""
        metrics.REQUEST_SUCCESS.labels(self.model_id, finish_reason).inc()
        metrics.E2E.labels(self.model_id).observe(now - self.arrival_s)
        tpot = 0.0
        if self.first_at is not None and self.last_at is not None and completion_tokens > 1:
            tpot = (self.last_at - self.first_at) / (completion_tokens - 1)
            metrics.TPOT.labels(self.model_id).observe(tpot)
        return tpot

    def close(self) -> None:
        """The request left (finished, failed or cancelled): it is neither waiting nor running."""
        if not self._open:
            return
        self._open = False
        self.active.add(self.model_id, "waiting" if self.first_at is None else "running", -1)
