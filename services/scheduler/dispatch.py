"""The request path: route to an instance, start one if needed (cold start), stream tokens.

No capacity is answered with a bounded wait: a request that fits nowhere waits for capacity
to free (a request finishing, an instance or node appearing) up to `admission_timeout_s`,
then fails with RESOURCE_EXHAUSTED (docs/API.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from loguru import logger

from services.common.convert import sampling_to_pb
from services.common.errors import NoCapacity, WorkerUnavailable
from services.scheduler import metrics
from services.scheduler.placement_live import candidate_nodes
from services.scheduler.state import ClusterWatcher
from services.scheduler.workers import WorkerClients
from services.worker.engine.base import SamplingParams
from slinfer.v1 import worker_pb2


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    admission_timeout_s: float = 60.0
    default_kv_capacity_tokens: int = 4096
    load_timeout_s: float = 300.0
    rpc_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.admission_timeout_s <= 0 or self.load_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        if self.default_kv_capacity_tokens <= 0:
            raise ValueError("default_kv_capacity_tokens must be positive")


@dataclass(frozen=True, slots=True)
class Placement:
    instance_id: str
    node_id: str
    address: str
    load_s: float  # cold-start time this request waited for


class Dispatcher:
    def __init__(self, watcher: ClusterWatcher, workers: WorkerClients, config: DispatchConfig):
        self.watcher = watcher
        self.workers = workers
        self.config = config
        self.inflight: dict[str, int] = defaultdict(int)  # instance -> our open requests
        self.full: set[str] = set()  # refused for KV capacity until one of its requests ends
        self.last_used: dict[str, float] = {}
        self._loads: dict[str, asyncio.Task[Placement | None]] = {}

    # ---- routing ---------------------------------------------------------------------------

    def _ready(self, model_id: str) -> list[dict[str, Any]]:
        view = self.watcher.view
        return [
            i
            for i in view.instances_of(model_id)
            if i.get("state") == "ready"
            and i["instance_id"] not in self.full
            and i.get("node_id") in view.nodes
        ]

    def route(self, model_id: str) -> Placement | None:
        """The busiest ready instance with room (reactive bin-packing, DESIGN.md §4)."""
        ready = self._ready(model_id)
        if not ready:
            return None
        best = max(ready, key=lambda i: (self.inflight[i["instance_id"]], i["instance_id"]))
        node = self.watcher.view.nodes[best["node_id"]]
        return Placement(best["instance_id"], best["node_id"], node["address"], 0.0)

    # ---- cold start ------------------------------------------------------------------------

    async def cold_start(self, model: dict[str, Any]) -> Placement | None:
        """Start one instance of the model (shared by concurrent requests for it)."""
        model_id = model["model_id"]
        task = self._loads.get(model_id)
        if task is None:
            task = asyncio.create_task(self._load(model), name=f"load:{model_id}")
            self._loads[model_id] = task
            task.add_done_callback(lambda _t: self._loads.pop(model_id, None))
        return await asyncio.shield(task)

    async def _load(self, model: dict[str, Any]) -> Placement | None:
        model_id = model["model_id"]
        kv_tokens = int(model.get("kv_capacity_tokens") or self.config.default_kv_capacity_tokens)
        for node in candidate_nodes(self.watcher.view, model, kv_tokens):
            iid = f"{model_id[:48]}-{uuid.uuid4().hex[:8]}"
            req = worker_pb2.LoadInstanceRequest(
                instance_id=iid,
                model_id=model_id,
                path=model["path"],
                engine={"torch": 1, "vllm": 2}.get(model.get("engine") or "", 0),
                kv_capacity_tokens=kv_tokens,
            )
            t0 = time.monotonic()
            try:
                await self.workers.stub(node["address"]).LoadInstance(
                    req, timeout=self.config.load_timeout_s
                )
            except grpc.aio.AioRpcError as exc:
                logger.warning(
                    "load of model={} on node={} failed: {} {}",
                    model_id,
                    node["node_id"],
                    exc.code().name,
                    exc.details(),
                )
                if exc.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
                    continue
                raise
            metrics.COLD_STARTS.labels(model_id).inc()
            self.last_used[iid] = time.monotonic()
            # The worker's etcd record may arrive after its RPC answer: wait briefly for it so
            # routing sees the instance.
            await self.watcher.wait_for(
                lambda v, i=iid: v.instances.get(i, {}).get("state") == "ready", 5.0
            )
            return Placement(iid, node["node_id"], node["address"], time.monotonic() - t0)
        return None

    # ---- the request -----------------------------------------------------------------------

    async def _notify(self) -> None:
        async with self.watcher.changed:
            self.watcher.changed.notify_all()

    async def _acquire(self, model: dict[str, Any], deadline: float) -> Placement:
        load_s = 0.0
        while True:
            placement = self.route(model["model_id"])
            if placement is None:
                t0 = time.monotonic()
                placement = await self.cold_start(model)
                if placement is not None:
                    load_s += time.monotonic() - t0
            if placement is not None:
                return Placement(
                    placement.instance_id,
                    placement.node_id,
                    placement.address,
                    load_s + placement.load_s,
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoCapacity(
                    f"no capacity for model {model['model_id']} within "
                    f"{self.config.admission_timeout_s:.0f} s: every instance is full and no "
                    "node can host another; retry later or add a worker"
                )
            async with self.watcher.changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.watcher.changed.wait(), min(remaining, 1.0))

    async def generate(
        self,
        model: dict[str, Any],
        request_id: str,
        prompt_ids: list[int],
        sampling: SamplingParams,
        arrival: float,
    ) -> AsyncIterator[tuple[Placement, worker_pb2.SubmitResponse]]:
        """Stream a request's worker responses, retrying placement while nothing was sent."""
        deadline = arrival + self.config.admission_timeout_s
        submit = worker_pb2.SubmitRequest(
            request_id=request_id,
            prompt_token_ids=prompt_ids,
            sampling=sampling_to_pb(sampling),
        )
        while True:
            placement = await self._acquire(model, deadline)
            iid = placement.instance_id
            submit.instance_id = iid
            stub = self.workers.stub(placement.address)
            call = stub.Submit(submit)
            self.inflight[iid] += 1
            self.last_used[iid] = time.monotonic()
            finished = False
            try:
                async for resp in call:
                    finished = resp.finished
                    yield placement, resp
                    if finished:
                        return
                raise WorkerUnavailable(
                    f"worker for instance {iid} closed the stream before the request finished"
                )
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    self.full.add(iid)  # KV full: try another instance or wait
                    continue
                if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION) and (
                    "no instance" in (exc.details() or "") or "not ready" in (exc.details() or "")
                ):
                    await asyncio.sleep(0.1)  # instance went away: the view will catch up
                    continue
                if code == grpc.StatusCode.UNAVAILABLE:
                    raise WorkerUnavailable(
                        f"worker at {placement.address} is unreachable: {exc.details()}"
                    ) from exc
                raise
            finally:
                self.inflight[iid] -= 1
                self.last_used[iid] = time.monotonic()
                if self.inflight[iid] <= 0:
                    self.inflight.pop(iid, None)
                if not finished:
                    call.cancel()
                    with contextlib.suppress(Exception):
                        await asyncio.shield(
                            stub.Abort(
                                worker_pb2.AbortRequest(request_id=request_id, instance_id=iid),
                                timeout=self.config.rpc_timeout_s,
                            )
                        )
                self.full.discard(iid)
                await self._notify()

    # ---- keep-alive (scale to zero) --------------------------------------------------------

    async def reclaim_idle(self, default_keep_alive_s: float, now: float) -> list[str]:
        """Unload ready instances idle past their model's keep-alive."""
        view = self.watcher.view
        unloaded = []
        for iid, inst in list(view.instances.items()):
            if inst.get("state") != "ready" or self.inflight.get(iid):
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
