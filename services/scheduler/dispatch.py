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

from services.common.convert import sampling_to_pb
from services.common.errors import FailedPrecondition, NoCapacity, WorkerUnavailable
from services.memory.client import MemoryClient
from services.memory.policy import KvScaling, KvScalingConfig
from services.scheduler import metrics
from services.scheduler.kv_scaler import KvScaler
from services.scheduler.live_view import PendingLoad, ViewBuilder
from services.scheduler.placement_live import candidate_nodes
from services.scheduler.policy import (
    DispatchKind,
    PolicyConfig,
    SystemName,
    decide,
    system_spec,
)
from services.scheduler.state import ClusterWatcher
from services.scheduler.tracker import LiveRequest, Tracker
from services.scheduler.workers import WorkerClients
from services.worker.engine.base import SamplingParams
from slinfer.v1 import worker_pb2

# Load failures worth trying elsewhere (or later); anything else means the model cannot load.
_TRANSIENT = (
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
)


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    system: SystemName = SystemName.SLINFER
    # Extra wait beyond a request's TTFT deadline before it is refused (0: the SLO itself).
    queue_grace_s: float = 0.0
    default_kv_capacity_tokens: int = 4096
    l_min_tokens: int = 1024
    # The admission variant docs/EVALUATION.md recommends for CPUs (prefills checked on the
    # device share decoding leaves); off: DESIGN.md §2 exactly.
    prefill_on_leftover: bool = False
    prior_output_tokens: float = 128.0
    # KV scaling through the memory service (DESIGN.md §3): forward-looking with watermark w,
    # or the reactive baseline (grow only when full) for docs/EVALUATION.md's comparison.
    kv_scaling: KvScaling = KvScaling.FORWARD
    watermark: float = 0.25
    load_timeout_s: float = 300.0
    rpc_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.queue_grace_s < 0 or self.load_timeout_s <= 0:
            raise ValueError("queue_grace_s must be >= 0 and load_timeout_s > 0")
        if self.default_kv_capacity_tokens <= 0 or self.l_min_tokens < 0:
            raise ValueError("default_kv_capacity_tokens > 0 and l_min_tokens >= 0 required")

    @property
    def kv_config(self) -> KvScalingConfig:
        return KvScalingConfig(self.kv_scaling, self.l_min_tokens, self.watermark)

    @property
    def policy(self) -> PolicyConfig:
        return PolicyConfig(
            l_min_tokens=self.l_min_tokens, prefill_on_leftover=self.prefill_on_leftover
        )


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
        # Preemption is carried out by the consolidator (issue 7); until it is live the
        # scheduler decides as SLINFER without the preemption step.
        self.system = replace(system_spec(config.system), preempt=False)
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
            engine={"torch": 1, "vllm": 2}.get(model.get("engine") or "", 0),
            kv_capacity_tokens=kv_tokens,
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
                d = decide(
                    self.dispatch_view(model), req, time.time(), self.system, self.policy_config
                )
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
            deadline = req.arrival_s + req.excused_s + req.ttft_slo_s + self.config.queue_grace_s
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
        """Stream a request's worker responses; retries placement while nothing was sent."""
        submit = worker_pb2.SubmitRequest(
            request_id=req.request_id,
            prompt_token_ids=prompt_ids,
            sampling=sampling_to_pb(sampling),
        )
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
                finished = False
                try:
                    async for resp in call:
                        if resp.token_ids:
                            first = req.output_tokens == 0
                            req.output_tokens += len(resp.token_ids)
                            if first:
                                self.on_change(iid)  # its prefill is done: budgets change
                            self.kv.touch(iid)
                        finished = resp.finished
                        yield placement, resp
                        if finished:
                            self.tracker.completed(req.model_id, resp.completion_tokens)
                            return
                    raise WorkerUnavailable(f"worker for {iid} closed the stream early")
                except grpc.aio.AioRpcError as exc:
                    code, details = exc.code(), exc.details() or ""
                    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and req.output_tokens == 0:
                        logger.info(
                            "instance {} refused request={} ({}); re-deciding",
                            iid,
                            req.request_id,
                            details,
                        )
                        self.tracker.detach(req)
                        self.on_change(iid)
                        await asyncio.sleep(self.policy_config.retry_interval_s)
                        continue
                    if code == grpc.StatusCode.UNAVAILABLE:
                        raise WorkerUnavailable(
                            f"worker at {placement.address} is unreachable: {details}"
                        ) from exc
                    raise
                finally:
                    self.last_used[iid] = time.monotonic()
                    if not finished:
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
        finally:
            iid_left = self.tracker.detach(req)
            if iid_left is not None:
                self.on_change(iid_left)
                self.kv.touch(iid_left)  # a request left: the KV may shrink
            await self._notify()

    # ---- keep-alive (scale to zero) --------------------------------------------------------

    async def reclaim_idle(self, default_keep_alive_s: float, now: float) -> list[str]:
        """Unload ready instances idle past their model's keep-alive."""
        view = self.watcher.view
        unloaded = []
        for iid, inst in list(view.instances.items()):
            if inst.get("state") != "ready" or self.tracker.busy(iid):
                continue
            model = view.models.get(inst.get("model_id", ""))
            configured = model.get("keep_alive_s") if model else 0.0
            keep_alive = default_keep_alive_s if configured is None else float(configured)
            last = self.last_used.setdefault(iid, now)
            if model is not None and now - last < keep_alive:
                continue
            node = view.nodes.get(inst.get("node_id", ""))
            if node is None:
                continue
            try:
                await self.workers.stub(node["address"]).UnloadInstance(
                    worker_pb2.UnloadInstanceRequest(instance_id=iid),
                    timeout=self.config.rpc_timeout_s,
                )
            except grpc.aio.AioRpcError as exc:
                logger.warning("keep-alive unload of {} failed: {}", iid, exc.details())
                continue
            self.last_used.pop(iid, None)
            metrics.UNLOADS.labels(inst.get("model_id", "")).inc()
            unloaded.append(iid)
            logger.info("scaled to zero: instance={} model={}", iid, inst.get("model_id"))
        return unloaded
