"""Requests waiting for capacity: one queue per model, in order; only its head decides again.

A request that fits nowhere waits and is decided again as capacity frees, until its first
token's deadline (`headroom.give_up_at_s`, the simulator's rule), then is refused with
RESOURCE_EXHAUSTED. Waiting requests of a model queue in arrival order (a re-dispatched
request, whose stream is under way, goes first). Only the head of a queue decides again, on
every change of the cluster and at least every retry interval; when it is admitted the next
one decides at once, so a burst admits as many as fit one after the other, each decision
seeing the ones before. A request that arrives while others of its model wait joins the
queue without deciding: nothing jumps the queue, and a burst of N requests costs O(N)
decisions, not O(N) per change (which starved the streams of the requests already
admitted). A waiting request that is not the head gives up at its own deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

from slinfer.policy.headroom import give_up_at_s
from slinfer.services.cluster.state import ClusterWatcher
from slinfer.services.cluster.tracker import LiveRequest
from slinfer.services.common.errors import NoCapacity
from slinfer.services.common.records import ModelRecord
from slinfer.services.scheduler.slo_guard import SloGuard


@dataclass(eq=False)
class Waiter:
    request_id: str
    turn: asyncio.Event = field(default_factory=asyncio.Event)  # set: it is the head now


class WaitQueues:
    def __init__(
        self, watcher: ClusterWatcher, guard: SloGuard, failover_patience_s: float
    ) -> None:
        self.watcher, self.guard = watcher, guard
        self.failover_patience_s = failover_patience_s
        self._queues: defaultdict[str, deque[Waiter]] = defaultdict(deque)
        self.last_failure: dict[str, str] = {}  # model -> why its last cold start failed

    @property
    def waiting(self) -> int:
        """Requests waiting for capacity now (published for packing)."""
        return sum(len(q) for q in self._queues.values())

    def others_waiting(self, model_id: str) -> bool:
        return bool(self._queues.get(model_id))

    def join(self, model_id: str, req: LiveRequest) -> Waiter:
        waiter, queue = Waiter(req.request_id), self._queues[model_id]
        if req.resumed_at_s is not None:
            queue.appendleft(waiter)  # under way: before requests still waiting to start
        else:
            queue.append(waiter)
        if queue[0] is waiter:
            waiter.turn.set()
        return waiter

    def is_head(self, model_id: str, waiter: Waiter) -> bool:
        queue = self._queues.get(model_id)
        return bool(queue) and queue[0] is waiter

    def leave(self, model_id: str, waiter: Waiter) -> None:
        queue = self._queues.get(model_id)
        if not queue or waiter not in queue:
            return
        queue.remove(waiter)
        if queue:
            queue[0].turn.set()  # the next one decides at once
        else:
            del self._queues[model_id]

    def give_up_at(self, req: LiveRequest) -> float:
        at = give_up_at_s(req, req.resumed_at_s, self.guard.policy)
        if req.resumed_at_s is not None:  # a stream under way: more patience to continue it
            at = max(at, req.resumed_at_s + self.failover_patience_s)
        return at

    async def wait(self, model: ModelRecord, req: LiveRequest, waiter: Waiter) -> None:
        """Wait for the next chance to decide: as the head, the next change of the cluster
        (or the retry interval); otherwise, to become the head. NoCapacity past the deadline."""
        model_id = model.model_id
        remaining = self.give_up_at(req) - time.time()
        if remaining <= 0:
            raise self.refusal(model, req)
        if self.is_head(model_id, waiter):
            async with self.watcher.changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.watcher.changed.wait(),
                        min(remaining, self.guard.base.retry_interval_s),
                    )
            return
        waiter.turn.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.turn.wait(), remaining)

    def refusal(self, model: ModelRecord, req: LiveRequest) -> Exception:
        """Why the request gives up, said so the caller knows what to do."""
        model_id = model.model_id
        failure = self.last_failure.get(model_id, "")
        cause = f"; the last cold start failed: {failure}" if failure else ""
        return NoCapacity(
            f"no capacity for model {model_id} now: no instance admits the request within "
            f"its TTFT SLO ({req.ttft_slo_s:.2f} s) and no node can host another{cause}; "
            "retry in a few seconds, relax the SLO or add a worker",
            retry_after_s=max(1.0, req.ttft_slo_s),
        )
