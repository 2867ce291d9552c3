"""The request path: admit by the policy core's decision, start instances, stream tokens.

For every request the dispatcher builds the policy's view (live_view.py) and carries out
`policy.decide`: attach to an existing instance (busiest admissible, shadow-validated), or
place a new one on the most loaded node that validates (cold start), or wait. A request that
fits nowhere is retried as capacity frees; when its TTFT deadline passes (load time it waited
for excused), it fails with RESOURCE_EXHAUSTED (docs/API.md). The first instance of a model
that has never been profiled is placed by memory alone (placement_live.py): its worker
measures the model's tables at load, and every later decision uses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any

import grpc
from loguru import logger

from slinfer.policy import (
    DispatchDecision,
    DispatchKind,
    InstancePhase,
    decide,
    system_spec,
)
from slinfer.policy.routing import busiest_first
from slinfer.services.common.convert import ENGINE_TO_PB, WEIGHTS_TO_PB, sampling_to_pb
from slinfer.services.common.errors import FailedPrecondition, NoCapacity, WorkerUnavailable
from slinfer.services.memory.client import MemoryClient
from slinfer.services.scheduler import metrics
from slinfer.services.scheduler.dispatch_config import DispatchConfig
from slinfer.services.scheduler.kv_scaler import KvScaler
from slinfer.services.scheduler.live_view import PendingLoad, ViewBuilder
from slinfer.services.scheduler.placement_live import candidate_nodes
from slinfer.services.scheduler.preemption import PreemptionClient
from slinfer.services.scheduler.reclaim import reclaim_idle
from slinfer.services.scheduler.redispatch import (
    StreamProgress,
    TokenizerOf,
    flush_response,
    tokenizer_for,
    without_node,
)
from slinfer.services.scheduler.state import ClusterWatcher
from slinfer.services.scheduler.tracker import LiveRequest, Tracker
from slinfer.services.scheduler.workers import WorkerClients
from slinfer.services.worker.engine.base import EngineKind, SamplingParams
from slinfer.services.worker.engine.weight_format import WeightFormat
from slinfer.v1 import common_pb2, worker_pb2

# Load failures worth trying elsewhere (or later); anything else means the model cannot load.
_TRANSIENT = (
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
)
# Submit refusals worth deciding again for: full, draining/unloading, or already gone.
_REFUSED = (
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
)
_MAX_REFUSALS = 20

__all__ = ["DispatchConfig", "Dispatcher", "Placement"]


@dataclass(frozen=True, slots=True)
class Placement:
    instance_id: str
    node_id: str
    address: str
    load_s: float  # cold-start time this request waited for


class Dispatcher:
    def __init__(
        self,
        watcher: ClusterWatcher,
        workers: WorkerClients,
        config: DispatchConfig,
        on_change: Callable[[str], None] = lambda _iid: None,
    ):
        self.watcher = watcher
        self.workers = workers
        self.config = config
        # Preemption is carried out by the consolidator (preemption.py); without a reachable
        # leader the scheduler decides without the preemption step.
        self.system = system_spec(config.system)
        self.no_preempt = replace(self.system, preempt=False)
        self.preemption = PreemptionClient()
        self.tokenizer_of: TokenizerOf | None = None  # for lossless re-dispatch (server.py)
        self.policy_config = config.policy
        self.tracker = Tracker(prior_output_tokens=config.prior_output_tokens)
        self.kv = KvScaler(watcher, self.tracker, MemoryClient(watcher.store), config.kv_config)
        self.views = ViewBuilder()
        self.on_change = on_change
        self.last_used: dict[str, float] = {}
        self._pending: dict[str, PendingLoad] = {}
        self._loads: dict[str, asyncio.Task[float]] = {}

    # ---- views -----------------------------------------------------------------------------

    def dispatch_view(self, model: dict[str, Any]) -> Any:
        return self.views.build(
            self.watcher.view,
            self.tracker,
            model,
            list(self._pending.values()),
            self.config.default_kv_capacity_tokens,
        )

    def instance_view(self, instance_id: str) -> Any:
        view = self.watcher.view
        rec = view.instances.get(instance_id)
        if rec is None:
            return None
        node = view.nodes.get(rec.get("node_id", ""), {})
        return self.views.instance_view(
            view,
            self.tracker,
            rec,
            node.get("label", node.get("kind", "cpu")),
            {},
            self.config.default_kv_capacity_tokens,
        )

    def node_of(self, instance_id: str) -> str | None:
        rec = self.watcher.view.instances.get(instance_id)
        if rec is not None:
            return str(rec.get("node_id"))
        pending = self._pending.get(instance_id)
        return pending.node_id if pending else None

    # ---- cold start ------------------------------------------------------------------------

    def _start_load(self, model: dict[str, Any], node_id: str, kv_tokens: int) -> str:
        model_id = model["model_id"]
        iid = f"{model_id[:48]}-{uuid.uuid4().hex[:8]}"
        self._pending[iid] = PendingLoad(iid, model_id, node_id, kv_tokens)
        task = asyncio.create_task(self._load(model, iid, node_id, kv_tokens), name=f"load:{iid}")
        self._loads[iid] = task

        def _done(_t: asyncio.Task[float]) -> None:
            self._loads.pop(iid, None)
            self._pending.pop(iid, None)

        task.add_done_callback(_done)
        return iid

    async def _load(self, model: dict[str, Any], iid: str, node_id: str, kv_tokens: int) -> float:
        node = self.watcher.view.nodes[node_id]
        req = worker_pb2.LoadInstanceRequest(
            instance_id=iid,
            model_id=model["model_id"],
            path=model["path"],
            engine=ENGINE_TO_PB[EngineKind(model["engine"])] if model.get("engine") else 0,
            kv_capacity_tokens=kv_tokens,
            weights=WEIGHTS_TO_PB[WeightFormat.parse(model.get("weights"))],
        )
        t0 = time.monotonic()
        await self.workers.stub(node["address"]).LoadInstance(
            req, timeout=self.config.load_timeout_s
        )
        metrics.COLD_STARTS.labels(model["model_id"]).inc()
        self.last_used[iid] = time.monotonic()
        # The worker's etcd record may trail its answer: wait briefly so routing sees it.
        await self.watcher.wait_for(lambda v: v.instances.get(iid, {}).get("state") == "ready", 5.0)
        return time.monotonic() - t0

    async def _await_ready(self, iid: str) -> float:
        """Wait for an instance to be ready; returns the seconds waited (excused)."""
        task = self._loads.get(iid)
        if task is None and self.watcher.view.instances.get(iid, {}).get("state") == "ready":
            return 0.0
        t0 = time.monotonic()
        if task is not None:
            await asyncio.shield(task)
        else:
            ok = await self.watcher.wait_for(
                lambda v: v.instances.get(iid, {}).get("state") != "loading",
                self.config.load_timeout_s,
            )
            if not ok:
                raise WorkerUnavailable(f"instance {iid} did not finish loading")
        return time.monotonic() - t0

    def _bootstrap_node(self, model: dict[str, Any], kv_tokens: int) -> str | None:
        nodes = candidate_nodes(self.watcher.view, model, kv_tokens)
        return nodes[0]["node_id"] if nodes else None

    # ---- admission -------------------------------------------------------------------------

    async def _notify(self) -> None:
        async with self.watcher.changed:
            self.watcher.changed.notify_all()

    def _placement(self, iid: str, load_s: float) -> Placement | None:
        view = self.watcher.view
        rec = view.instances.get(iid)
        node = view.nodes.get(rec.get("node_id", "")) if rec else None
        if rec is None or node is None or rec.get("state") != "ready":
            return None
        return Placement(iid, node["node_id"], node["address"], load_s)

    def _decide_now(
        self, model: dict[str, Any], req: LiveRequest, system: Any
    ) -> tuple[Any, DispatchDecision]:
        view = self.dispatch_view(model)
        if req.preempted_from is not None:
            # Its old node's room went to another request: elsewhere first, if possible.
            elsewhere = without_node(view, req.preempted_from)
            d = decide(elsewhere, req, time.time(), system, self.policy_config)
            if d.kind is not DispatchKind.NONE:
                return elsewhere, d
        return view, decide(view, req, time.time(), system, self.policy_config)

    async def _decide(self, model: dict[str, Any], req: LiveRequest) -> DispatchDecision:
        """The policy's decision; a PREEMPT is handed to the consolidator, then re-decided."""
        # A request already preempted is re-placed without preempting others (no cascades).
        preempt = req.preempted_from is None and self.preemption.available(self.watcher.view)
        view, d = self._decide_now(model, req, self.system if preempt else self.no_preempt)
        metrics.DECISIONS.labels(d.kind.value, d.reason.value if d.reason else "").inc()
        if d.kind is not DispatchKind.PREEMPT:
            return d
        live = [c for c in view.candidates if c.phase is not InstancePhase.RELEASING]
        order = [c.instance_id for c in busiest_first(live, self.system.defrag)]
        order.sort(key=lambda i: i != d.instance_id)  # the policy's target first
        victims = await self.preemption.ask(self.watcher.view, model["model_id"], order, req)
        if victims:  # wait until the view shows them gone, so the freed room is seen
            await self.watcher.wait_for(lambda v: not set(victims) & set(v.instances), 5.0)
        return self._decide_now(model, req, self.no_preempt)[1]

    async def admit(self, model: dict[str, Any], req: LiveRequest) -> Placement:
        """Attach the request to an instance that admits it, starting one if needed."""
        model_id = model["model_id"]
        kv_tokens = int(model.get("kv_capacity_tokens") or self.config.default_kv_capacity_tokens)
        while True:
            iid: str | None = None
            if not self.views.has_profile(self.watcher.view, model_id):
                # Bootstrap: share an in-flight first load, or place one by memory alone.
                iid = next(
                    (p.instance_id for p in self._pending.values() if p.model_id == model_id), None
                )
                if iid is None:
                    node_id = self._bootstrap_node(model, kv_tokens)
                    iid = self._start_load(model, node_id, kv_tokens) if node_id else None
                if iid is not None:
                    self.tracker.attach(req, iid)
            else:
                d = await self._decide(model, req)
                if d.kind is DispatchKind.EXISTING and d.instance_id is not None:
                    iid = d.instance_id
                    self.tracker.attach(req, iid)
                elif d.kind is DispatchKind.NEW_INSTANCE and d.node_id is not None:
                    iid = self._start_load(model, d.node_id, kv_tokens)
                    self.tracker.attach(req, iid)
            if iid is not None:
                self.on_change(iid)
                try:
                    req.excused_s += await self._await_ready(iid)
                    placement = self._placement(iid, req.excused_s)
                except (grpc.aio.AioRpcError, WorkerUnavailable) as exc:
                    logger.warning(
                        "instance {} unusable for request={}: {}", iid, req.request_id, exc
                    )
                    placement = None
                    if isinstance(exc, grpc.aio.AioRpcError) and exc.code() not in _TRANSIENT:
                        self.tracker.detach(req)
                        self.on_change(iid)
                        # The model cannot load (bad files, the engine refuses it): say so
                        # now instead of trying node after node until the deadline.
                        raise FailedPrecondition(
                            f"model {model_id} failed to load: {exc.details()}"
                        ) from exc
                if placement is not None:
                    with contextlib.suppress(Exception):  # scaling is best effort here
                        await self.kv.scale(iid)  # forward-looking demand, before the submit
                    return placement
                self.tracker.detach(req)  # it failed or went away while we waited
                self.on_change(iid)
            # A re-dispatched request keeps its deadlines: its next token is due at
            # S + TTFT + TPOT·O (excused load time added), but it gets at least one TTFT
            # window from its preemption to find a new place.
            deadline = max(
                req.arrival_s + req.excused_s + req.ttft_slo_s + req.tpot_slo_s * req.output_tokens,
                req.resumed_at_s + req.ttft_slo_s,
            )
            deadline += self.config.queue_grace_s
            remaining = deadline - time.time()
            if remaining <= 0:
                raise NoCapacity(
                    f"no capacity for model {model_id} within its TTFT SLO "
                    f"({req.ttft_slo_s:.2f} s): no instance admits the request and no node can "
                    "host another; retry later, relax the SLO or add a worker"
                )
            async with self.watcher.changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self.watcher.changed.wait(),
                        min(remaining, self.policy_config.retry_interval_s),
                    )

    # ---- the request -----------------------------------------------------------------------

    async def generate(
        self,
        model: dict[str, Any],
        req: LiveRequest,
        prompt_ids: list[int],
        sampling: SamplingParams,
    ) -> AsyncIterator[tuple[Placement, worker_pb2.SubmitResponse]]:
        """Stream a request's worker responses. Placement is retried while the chosen
        instance refuses before answering; a PREEMPTED stream is re-dispatched losslessly
        (redispatch.py)."""
        submit = worker_pb2.SubmitRequest(
            request_id=req.request_id,
            prompt_token_ids=prompt_ids,
            sampling=sampling_to_pb(sampling),
        )
        progress = StreamProgress()
        refusals = 0
        if self.kv.enabled:  # refuse at once what can never fit (docs/MEMORY.md)
            spec = self.views.spec(self.watcher.view, model, self.config.default_kv_capacity_tokens)
            context = len(prompt_ids) + sampling.max_tokens
            self.kv.check_fits(model, spec.weights_bytes, spec.kv_bytes_per_token, context)
        try:
            while True:
                placement = await self.admit(model, req)
                iid = placement.instance_id
                submit.instance_id = iid
                submit.deadline.CopyFrom(
                    worker_pb2.RequestDeadline(
                        arrival_unix_s=req.arrival_s,
                        ttft_slo_s=req.ttft_slo_s,
                        tpot_slo_s=req.tpot_slo_s,
                        excused_s=req.excused_s,
                    )
                )
                stub = self.workers.stub(placement.address)
                call = stub.Submit(submit)
                self.last_used[iid] = time.monotonic()
                ended = answered = False  # ended: the worker closed the request itself
                try:
                    async for resp in call:
                        answered = True
                        if resp.finish_reason == common_pb2.FINISH_REASON_PREEMPTED:
                            ended = True
                            break
                        out = progress.accept(resp)
                        if out is None:
                            continue
                        if out.token_ids:
                            first = req.output_tokens == 0
                            req.output_tokens += len(out.token_ids)
                            if first:
                                self.on_change(iid)  # its prefill is done: budgets change
                            self.kv.touch(iid)
                        ended = out.finished
                        yield placement, out
                        if ended:
                            self.tracker.completed(req.model_id, out.completion_tokens)
                            return
                    if not ended:
                        raise WorkerUnavailable(f"worker for {iid} closed the stream early")
                    tokenizer = tokenizer_for(self.tokenizer_of, model)
                    resume = progress.resume(tokenizer, prompt_ids, sampling.temperature == 0)
                    req.output_tokens = len(progress.token_ids)
                    del submit.resumed_token_ids[:]
                    submit.resumed_token_ids.extend(resume.resumed_token_ids)
                    req.resumed_at_s, req.preempted_from = time.time(), placement.node_id
                    metrics.REDISPATCHES.labels(req.model_id).inc()
                    logger.info(
                        "re-dispatching request={} preempted on {} after {} tokens "
                        "(resuming from {})",
                        req.request_id,
                        iid,
                        req.output_tokens,
                        len(resume.resumed_token_ids),
                    )
                    if resume.flush_text:
                        yield placement, flush_response(req.request_id, resume.flush_text)
                except grpc.aio.AioRpcError as exc:
                    code, details = exc.code(), exc.details() or ""
                    if code in _REFUSED and not answered and refusals < _MAX_REFUSALS:
                        # The instance refused before answering (full, draining, gone):
                        # decide again; the admission deadline bounds the retries.
                        refusals += 1
                        logger.info(
                            "instance {} refused request={} ({}); re-deciding",
                            iid,
                            req.request_id,
                            details,
                        )
                        await asyncio.sleep(self.policy_config.retry_interval_s)
                    elif code == grpc.StatusCode.UNAVAILABLE:
                        raise WorkerUnavailable(
                            f"worker at {placement.address} is unreachable: {details}"
                        ) from exc
                    else:
                        raise
                finally:
                    self.last_used[iid] = time.monotonic()
                    if not ended:
                        call.cancel()
                        with contextlib.suppress(Exception):
                            await asyncio.shield(
                                stub.Abort(
                                    worker_pb2.AbortRequest(
                                        request_id=req.request_id, instance_id=iid
                                    ),
                                    timeout=self.config.rpc_timeout_s,
                                )
                            )
                self.tracker.detach(req)
                self.on_change(iid)
        finally:
            iid_left = self.tracker.detach(req)
            if iid_left is not None:
                self.on_change(iid_left)
                self.kv.touch(iid_left)  # a request left: the KV may shrink
            await self._notify()

    # ---- keep-alive (scale to zero) --------------------------------------------------------

    async def reclaim_idle(self, default_keep_alive_s: float, now: float) -> list[str]:
        """Unload ready instances idle past their model's keep-alive (reclaim.py)."""
        return await reclaim_idle(self, default_keep_alive_s, now)
