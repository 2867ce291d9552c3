"""Admission, live: carry out the policy core's decision for one request (DESIGN.md §2, §4).

`policy.decide` is asked over the cluster as the scheduler sees it (live_view.py) and its
decision is carried out as given: attach to an existing instance; place a new one (a cold
start, cold_start.py); hand a preemption plan to the consolidator (preemption.py), then
attach to the plan's target; or wait. The decision's KV target goes to the memory service as
the request is attached. A request that fits nowhere is decided again as capacity frees,
until `give_up_at_s` (the simulator's rule too), then refused with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import grpc
from loguru import logger

from slinfer.policy import DispatchDecision, DispatchKind, DispatchView, decide, system_spec
from slinfer.services.cluster.live_view import ViewBuilder
from slinfer.services.cluster.state import ClusterWatcher
from slinfer.services.cluster.suspects import Suspects
from slinfer.services.cluster.tracker import LiveRequest, Tracker
from slinfer.services.common.errors import FailedPrecondition, WorkerUnavailable
from slinfer.services.common.records import InstanceState, ModelRecord
from slinfer.services.scheduler import metrics
from slinfer.services.scheduler.cold_start import ColdStarts
from slinfer.services.scheduler.dispatch_config import DispatchConfig
from slinfer.services.scheduler.kv_scaler import KvScaler
from slinfer.services.scheduler.preemption import PreemptionClient
from slinfer.services.scheduler.redispatch import without_node
from slinfer.services.scheduler.slo_guard import SloGuard
from slinfer.services.scheduler.waiting import WaitQueues

# Load failures worth trying elsewhere (or later); anything else means the model cannot load.
_TRANSIENT = (
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
)


@dataclass(frozen=True, slots=True)
class Placement:
    instance_id: str
    node_id: str
    address: str
    load_s: float  # cold-start time this request waited for


class Admission:
    def __init__(
        self,
        watcher: ClusterWatcher,
        tracker: Tracker,
        cold: ColdStarts,
        kv: KvScaler,
        config: DispatchConfig,
        on_change: Callable[[str], None],
        suspects: Suspects,
    ) -> None:
        self.watcher, self.tracker, self.cold, self.kv = watcher, tracker, cold, kv
        self.suspects = suspects
        self.config = config
        self.policy = config.policy
        self.system = system_spec(config.system)
        self.no_preempt = replace(self.system, preempt=False)
        self.views = ViewBuilder()
        self.preemption = PreemptionClient()
        self.on_change = on_change
        self.guard = SloGuard(config.policy)
        self.queues = WaitQueues(watcher, self.guard, config.failover_patience_s)

    def dispatch_view(self, model: ModelRecord) -> DispatchView:
        return self.views.build(
            self.watcher.view,
            self.tracker,
            model,
            list(self.cold.pending.values()),
            self.config.default_kv_capacity_tokens,
        )

    def _decide(self, model: ModelRecord, req: LiveRequest, preempt: bool) -> DispatchDecision:
        system = self.system if preempt else self.no_preempt
        view = self.dispatch_view(model)
        if req.preempted_from is not None:
            # Its old node's room went to another request: elsewhere first, if possible.
            elsewhere = without_node(view, req.preempted_from)
            d = decide(elsewhere, req, time.time(), system, self.guard.policy)
            if d.kind is not DispatchKind.NONE:
                return d
        return decide(view, req, time.time(), system, self.guard.policy)

    async def _target(self, model: ModelRecord, req: LiveRequest) -> str | None:
        """The instance the policy puts the request on now (attached), or None: wait."""
        model_id = model.model_id
        kv_tokens = model.kv_capacity_tokens or self.config.default_kv_capacity_tokens
        if not self.views.has_profile(self.watcher.view, model_id):
            # Bootstrap: share an in-flight first load, or place one by memory alone.
            iid = self.cold.loading_of(model_id)
            if iid is None:
                node_id = self.cold.bootstrap_node(model, kv_tokens)
                iid = self.cold.start(model, node_id, kv_tokens) if node_id else None
            if iid is not None:
                self.tracker.attach(req, iid)
            return iid
        # A re-dispatched request is placed without preempting others (no cascades).
        preempt = req.preempted_from is None and self.preemption.available(self.watcher.view)
        d = self._decide(model, req, preempt)
        metrics.DECISIONS.labels(d.kind.value, d.reason.value if d.reason else "").inc()
        if d.kind is DispatchKind.PREEMPT and d.preemption is not None:
            plan = d.preemption
            done = await self.preemption.carry_out(
                self.watcher.view, plan, model_id, req.request_id
            )
            if done:  # the victim is gone: the plan's target takes the request
                victim = plan.victim_instance_id
                await self.watcher.wait_for(lambda v: victim not in v.instances, 5.0)
            else:
                d = self._decide(model, req, preempt=False)
        if d.kind in (DispatchKind.EXISTING, DispatchKind.PREEMPT) and d.instance_id:
            self.tracker.attach(req, d.instance_id)
            if d.kv_bytes is not None:
                self.kv.request(d.instance_id, d.kv_bytes)
            return d.instance_id
        if d.kind is DispatchKind.NEW_INSTANCE and d.node_id is not None:
            if self.cold.loads_of(model_id) >= self.config.max_loads_per_model:
                return None  # bounded churn: wait for the loads under way
            iid = self.cold.start(model, d.node_id, kv_tokens)
            self.tracker.attach(req, iid)
            return iid
        return None

    def _placement(self, iid: str, load_s: float) -> Placement | None:
        view = self.watcher.view
        rec = view.instances.get(iid)
        node = view.nodes.get(rec.node_id) if rec else None
        if rec is None or node is None or rec.state is not InstanceState.READY:
            return None
        return Placement(iid, node.node_id, node.address, load_s)

    @property
    def waiting(self) -> int:
        """Requests waiting for capacity now (published for packing)."""
        return self.queues.waiting

    async def admit(self, model: ModelRecord, req: LiveRequest) -> Placement:
        """Attach the request to an instance that admits it, starting one if needed; or wait
        in its model's queue (waiting.py) and decide again when it is the head."""
        model_id = model.model_id
        waiter = None
        if self.queues.others_waiting(model_id):
            waiter = self.queues.join(model_id, req)  # nothing jumps the queue
        try:
            while True:
                if waiter is None or self.queues.is_head(model_id, waiter):
                    iid = await self._target(model, req)
                    if iid is not None:
                        placement = await self._ready(model, req, iid)
                        if placement is not None:
                            return placement
                    if waiter is None:
                        waiter = self.queues.join(model_id, req)
                await self.queues.wait(model, req, waiter)
        finally:
            if waiter is not None:
                self.queues.leave(model_id, waiter)

    async def _ready(self, model: ModelRecord, req: LiveRequest, iid: str) -> Placement | None:
        """Wait for the chosen instance to be ready; None if it failed or went away."""
        self.on_change(iid)
        try:
            req.excused_s += await self.cold.await_ready(iid)
            placement = self._placement(iid, req.excused_s)
        except (grpc.aio.AioRpcError, WorkerUnavailable) as exc:
            logger.warning("instance {} unusable for request={}: {}", iid, req.request_id, exc)
            placement = None
            details = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            self.queues.last_failure[model.model_id] = details or str(exc)
            node_id = self.cold.node_of(iid)
            if (
                isinstance(exc, grpc.aio.AioRpcError)
                and exc.code() == grpc.StatusCode.UNAVAILABLE
                and node_id is not None
                and "memory service" not in (details or "")
            ):
                self.suspects.mark(node_id, f"a load failed: {details}")
            if isinstance(exc, grpc.aio.AioRpcError) and exc.code() not in _TRANSIENT:
                self.tracker.detach(req)
                self.on_change(iid)
                # The model cannot load (bad files, the engine refuses it): say so now
                # instead of trying node after node until the deadline.
                raise FailedPrecondition(
                    f"model {model.model_id} failed to load: {exc.details()}"
                ) from exc
        if placement is None:
            self.tracker.detach(req)  # it failed or went away while we waited
            self.on_change(iid)
        else:
            self.queues.last_failure.pop(model.model_id, None)
        return placement
