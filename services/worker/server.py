"""Worker service: hosts model instances on one node (a CPU socket or a GPU).

The worker registers its node in etcd under a lease it keeps alive, writes one key per
instance under the same lease (so a dead worker's instances vanish with it), and serves the
internal `slinfer.v1.Worker` API to the scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from loguru import logger

from services.common import keys
from services.common.convert import ENGINE_TO_PB, FINISH_TO_PB, sampling_from_pb
from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InstanceNotFound,
    InvalidArgument,
    NoCapacity,
    status_of,
)
from services.common.model_dir import inspect_model_dir
from services.common.serving import make_server, set_serving
from services.common.store import Registration, Store
from services.worker import metrics
from services.worker.device import Device
from services.worker.engine.base import EngineKind, EngineRequest, RequestOutput
from services.worker.engine.registry import EngineSpec, create_engine, default_engine
from services.worker.instance import Instance, InstanceState
from slinfer.v1 import common_pb2, worker_pb2, worker_pb2_grpc

SERVICE_NAME = "slinfer.v1.Worker"
_STATE_TO_PB = {
    InstanceState.LOADING: common_pb2.INSTANCE_STATE_LOADING,
    InstanceState.READY: common_pb2.INSTANCE_STATE_READY,
    InstanceState.DRAINING: common_pb2.INSTANCE_STATE_DRAINING,
    InstanceState.UNLOADING: common_pb2.INSTANCE_STATE_UNLOADING,
    InstanceState.FAILED: common_pb2.INSTANCE_STATE_FAILED,
}


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    etcd: str
    listen: str = "127.0.0.1:0"
    advertise: str = ""  # address published in etcd; default: the listen address
    node_id: str = ""
    kind: str = "cpu"
    cores: int = 0  # 0: all cores of this process
    memory_bytes: int = 8 << 30  # what this node offers to weights + KV
    num_threads: int | None = None
    lease_ttl_s: int = 10

    def __post_init__(self) -> None:
        if self.kind not in ("cpu", "gpu"):
            raise ValueError(f"node kind must be cpu or gpu, got {self.kind!r}")
        if self.memory_bytes <= 0:
            raise ValueError("memory_bytes must be positive")
        if self.node_id and not keys.valid_name(self.node_id):
            raise ValueError(f"invalid node id {self.node_id!r}")


class WorkerServicer(worker_pb2_grpc.WorkerServicer):
    def __init__(self, worker: WorkerService):
        self.w = worker

    async def LoadInstance(self, request, context):  # noqa: N802
        try:
            inst, already = await self.w.load_instance(request)
            return worker_pb2.LoadInstanceResponse(
                instance=self.w.instance_status(inst), already_loaded=already
            )
        except Exception as exc:
            await _abort(context, exc)

    async def UnloadInstance(self, request, context):  # noqa: N802
        try:
            n = await self.w.unload_instance(request.instance_id)
            return worker_pb2.UnloadInstanceResponse(requests_aborted=n)
        except Exception as exc:
            await _abort(context, exc)

    async def Submit(self, request, context) -> AsyncIterator[worker_pb2.SubmitResponse]:  # noqa: N802
        try:
            async for out in self.w.submit(request):
                yield worker_pb2.SubmitResponse(
                    request_id=out.request_id,
                    token_ids=list(out.new_token_ids),
                    text=out.text_delta,
                    finished=out.finished,
                    finish_reason=FINISH_TO_PB.get(out.finish_reason, 0)
                    if out.finish_reason
                    else 0,
                    prompt_tokens=out.prompt_tokens,
                    completion_tokens=out.completion_tokens,
                )
        except Exception as exc:
            await _abort(context, exc)

    async def Abort(self, request, context):  # noqa: N802
        try:
            return worker_pb2.AbortResponse(
                aborted=await self.w.abort(request.instance_id, request.request_id)
            )
        except Exception as exc:
            await _abort(context, exc)

    async def Stats(self, request, context):  # noqa: N802
        return self.w.stats()


async def _abort(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    code, message = status_of(exc)
    if code == grpc.StatusCode.INTERNAL:
        logger.exception("worker call failed: {}", exc)
    await context.abort(code, message)


class WorkerService:
    def __init__(self, config: WorkerConfig):
        self.config = config
        self.node_id = config.node_id or f"{config.kind}-{uuid.uuid4().hex[:8]}"
        self.store = Store(config.etcd)
        self.device = Device(self.node_id)
        self.instances = self.device.instances
        self.registration: Registration | None = None
        self.server: grpc.aio.Server | None = None
        self.address = ""
        self._loading: dict[str, asyncio.Future[Instance]] = {}

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> str:
        await self.store.connect()
        self.server, health = make_server(
            [lambda s: worker_pb2_grpc.add_WorkerServicer_to_server(WorkerServicer(self), s)],
            [SERVICE_NAME],
        )
        host, _, _ = self.config.listen.rpartition(":")
        port = self.server.add_insecure_port(self.config.listen)
        if host in ("0.0.0.0", "[::]", ""):
            host = socket.gethostname()
        self.address = self.config.advertise or f"{host}:{port}"
        await self.server.start()
        self.device.start()
        self.registration = Registration(
            self.store,
            keys.node(self.node_id),
            self.node_record(),
            ttl_s=self.config.lease_ttl_s,
            on_renewed=self._rewrite_instances,
        )
        await self.registration.start()
        await set_serving(health, [SERVICE_NAME], True)
        logger.info("worker {} ({}) serving on {}", self.node_id, self.config.kind, self.address)
        return self.address

    async def stop(self, grace_s: float = 2.0) -> None:
        for inst in list(self.instances.values()):
            with contextlib.suppress(Exception):
                await self.unload_instance(inst.instance_id)
        if self.registration:
            await self.registration.stop()
        if self.server:
            await self.server.stop(grace_s)
        await self.device.stop()
        await self.store.close()

    def node_record(self) -> dict[str, object]:
        return {
            "node_id": self.node_id,
            "kind": self.config.kind,
            "address": self.address,
            "cores": self.config.cores or (os.cpu_count() or 1),
            "memory_bytes": self.config.memory_bytes,
            "started_at": time.time(),
        }

    async def _rewrite_instances(self, lease_id: int) -> None:
        for inst in list(self.instances.values()):
            await self.store.put(
                keys.instance(inst.instance_id), inst.record(self.node_id), lease=lease_id
            )

    async def _publish(self, inst: Instance) -> None:
        assert self.registration is not None
        await self.store.put(
            keys.instance(inst.instance_id),
            inst.record(self.node_id),
            lease=self.registration.lease_id,
        )

    # ---- memory ----------------------------------------------------------------------------

    def memory_used_bytes(self) -> int:
        used = 0
        for inst in self.instances.values():
            if inst.stats is not None:
                used += inst.stats.weights_bytes + inst.stats.kv_bytes_allocated
        return used

    def _check_fits(self, path: str, kv_capacity_tokens: int) -> None:
        info = inspect_model_dir(path)
        # Upper bound before loading: fp32 weights and KV; the real figures replace it after.
        need = info.weights_bytes(4) + kv_capacity_tokens * info.kv_bytes_per_token(4)
        free = self.config.memory_bytes - self.memory_used_bytes()
        if need > free:
            raise NoCapacity(
                f"node {self.node_id} has {free >> 20} MiB free, instance needs about "
                f"{need >> 20} MiB (weights + {kv_capacity_tokens} KV tokens)"
            )

    # ---- instances -------------------------------------------------------------------------

    async def load_instance(self, req: worker_pb2.LoadInstanceRequest) -> tuple[Instance, bool]:
        iid = req.instance_id
        if not keys.valid_name(iid) or not keys.valid_name(req.model_id):
            raise InvalidArgument("instance_id and model_id must be 1-64 of [A-Za-z0-9._-]")
        if req.kv_capacity_tokens <= 0:
            raise InvalidArgument("kv_capacity_tokens must be > 0")
        existing = self.instances.get(iid)
        if existing is not None:
            if existing.model_id != req.model_id:
                raise AlreadyExists(f"instance {iid} exists for model {existing.model_id}")
            if iid in self._loading:
                await asyncio.shield(self._loading[iid])
            if existing.state is InstanceState.FAILED:
                raise FailedPrecondition(f"instance {iid} failed to load: {existing.error}")
            return existing, True
        kind = {1: EngineKind.TORCH, 2: EngineKind.VLLM}.get(req.engine) or default_engine(
            self.config.kind
        )
        self._check_fits(req.path, req.kv_capacity_tokens)
        inst = Instance(iid, req.model_id, req.path, kind, req.kv_capacity_tokens)
        self.instances[iid] = inst
        fut: asyncio.Future[Instance] = asyncio.get_running_loop().create_future()
        self._loading[iid] = fut
        await self._publish(inst)
        spec = EngineSpec(
            path=inspect_model_dir(req.path).path,
            kv_capacity_tokens=req.kv_capacity_tokens,
            device="cuda" if self.config.kind == "gpu" else "cpu",
            num_threads=self.config.num_threads,
        )
        t0 = time.perf_counter()
        try:
            engine = await self.device.call(create_engine, kind, spec)
            inst.stats = await self.device.call(engine.stats)
        except Exception as exc:
            self.instances.pop(iid, None)
            with contextlib.suppress(Exception):
                await self.store.delete(keys.instance(iid))
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters re-raise their own copy
            raise
        finally:
            self._loading.pop(iid, None)
        inst.engine, inst.load_s = engine, time.perf_counter() - t0
        inst.state = InstanceState.READY
        inst.idle_since = time.monotonic()
        metrics.LOAD_SECONDS.observe(inst.load_s)
        metrics.INSTANCES.labels(self.node_id).set(len(self.instances))
        await self._publish(inst)
        fut.set_result(inst)
        logger.info(
            "loaded instance={} model={} engine={} in {:.2f}s",
            iid,
            req.model_id,
            kind.value,
            inst.load_s,
        )
        return inst, False

    async def unload_instance(self, instance_id: str) -> int:
        inst = self.instances.get(instance_id)
        if inst is None:
            raise InstanceNotFound(f"no instance {instance_id} on node {self.node_id}")
        inst.state = InstanceState.UNLOADING
        aborted = 0
        if inst.engine is not None:
            engine = inst.engine
            for rid in list(inst.streams):
                out = await self.device.call(engine.abort_request, rid)
                queue = inst.streams.get(rid)
                if queue is not None:
                    queue.put_nowait(out)
                aborted += 1
            await self.device.call(engine.close)
        self.instances.pop(instance_id, None)
        with contextlib.suppress(Exception):
            await self.store.delete(keys.instance(instance_id))
        metrics.INSTANCES.labels(self.node_id).set(len(self.instances))
        logger.info("unloaded instance={} aborted={}", instance_id, aborted)
        return aborted

    # ---- requests --------------------------------------------------------------------------

    async def submit(self, req: worker_pb2.SubmitRequest) -> AsyncIterator[RequestOutput]:
        inst = self.instances.get(req.instance_id)
        if inst is None:
            raise InstanceNotFound(f"no instance {req.instance_id} on node {self.node_id}")
        if inst.state is not InstanceState.READY or inst.engine is None:
            raise FailedPrecondition(
                f"instance {req.instance_id} is {inst.state.value}, not ready for requests"
            )
        rid = req.request_id or uuid.uuid4().hex
        if rid in inst.streams:
            raise AlreadyExists(f"request {rid} is already running on {req.instance_id}")
        if not req.prompt_token_ids:
            raise InvalidArgument("prompt_token_ids must not be empty")
        engine = inst.engine
        ereq = EngineRequest(
            request_id=rid,
            prompt_token_ids=tuple(req.prompt_token_ids),
            sampling=sampling_from_pb(req.sampling),
            resumed_token_ids=tuple(req.resumed_token_ids),
        )
        queue: asyncio.Queue[RequestOutput | None] = asyncio.Queue()
        inst.streams[rid] = queue
        finished = False
        status = "error"
        try:
            await self.device.call(engine.add_request, ereq)
            self.device.wake()
            while True:
                out = await queue.get()
                if out is None:
                    raise FailedPrecondition(
                        f"instance {inst.instance_id} failed: {inst.error or 'unloaded'}"
                    )
                if out.finished:
                    finished = True
                    status = out.finish_reason.value if out.finish_reason else "stop"
                yield out
                if finished:
                    return
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        finally:
            inst.streams.pop(rid, None)
            if not inst.streams:
                inst.idle_since = time.monotonic()
            if not finished and inst.engine is not None:
                # Client gone or an error: free the request's KV now (never leak it).
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.device.call(inst.engine.abort_request, rid))
            metrics.REQUESTS.labels(inst.model_id, status).inc()

    async def abort(self, instance_id: str, request_id: str) -> bool:
        inst = self.instances.get(instance_id)
        if inst is None or inst.engine is None:
            return False
        out = await self.device.call(inst.engine.abort_request, request_id)
        queue = inst.streams.get(request_id)
        if out is not None and queue is not None:
            queue.put_nowait(out)
        return out is not None

    # ---- status ----------------------------------------------------------------------------

    def instance_status(self, inst: Instance) -> common_pb2.InstanceStatus:
        s = inst.stats
        return common_pb2.InstanceStatus(
            instance_id=inst.instance_id,
            model_id=inst.model_id,
            node_id=self.node_id,
            state=_STATE_TO_PB[inst.state],
            engine=ENGINE_TO_PB[inst.engine_kind],
            running=s.running if s else 0,
            waiting=s.waiting if s else 0,
            kv_capacity_tokens=s.kv_capacity_tokens if s else inst.kv_capacity_tokens,
            kv_used_tokens=s.kv_used_tokens if s else 0,
            kv_bytes_allocated=s.kv_bytes_allocated if s else 0,
            weights_bytes=s.weights_bytes if s else 0,
            kv_resizable=s.kv_resizable if s else False,
            load_s=inst.load_s,
            iterations=s.iterations if s else 0,
            idle_s=inst.idle_s(time.monotonic()),
        )

    def stats(self) -> worker_pb2.WorkerStats:
        rec = self.node_record()
        used = self.memory_used_bytes()
        metrics.KV_BYTES.labels(self.node_id).set(
            sum(i.stats.kv_bytes_allocated for i in self.instances.values() if i.stats)
        )
        node = common_pb2.NodeStatus(
            node_id=self.node_id,
            kind=common_pb2.DEVICE_KIND_GPU
            if self.config.kind == "gpu"
            else common_pb2.DEVICE_KIND_CPU,
            address=self.address,
            cores=int(rec["cores"]),  # type: ignore[call-overload]
            memory_bytes=self.config.memory_bytes,
            memory_used_bytes=used,
            instances=len(self.instances),
            reachable=True,
        )
        return worker_pb2.WorkerStats(
            node=node, instances=[self.instance_status(i) for i in self.instances.values()]
        )
