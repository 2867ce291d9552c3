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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from loguru import logger

from slinfer.policy import DeviceKind
from slinfer.services.common import keys
from slinfer.services.common.convert import (
    FINISH_TO_PB,
    sampling_from_pb,
)
from slinfer.services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InstanceNotFound,
    InvalidArgument,
    status_of,
)
from slinfer.services.common.serving import make_server, set_serving
from slinfer.services.common.store import Registration, Store
from slinfer.services.worker import eviction, loading, metrics
from slinfer.services.worker.arbiter import DeviceArbiter, TrackedRequest
from slinfer.services.worker.calibration import hardware_label
from slinfer.services.worker.device import Device
from slinfer.services.worker.engine.base import EngineRequest, RequestOutput
from slinfer.services.worker.engine.registry import (
    default_engine,
    prepare_engine,
)
from slinfer.services.worker.instance import Instance, InstanceState
from slinfer.services.worker.leases import watch_leases
from slinfer.services.worker.memory_agent import MemoryAgent
from slinfer.services.worker.profiler import ProfileCache, ProfileGrid
from slinfer.services.worker.status import instance_status, worker_stats
from slinfer.v1 import common_pb2, worker_pb2, worker_pb2_grpc

SERVICE_NAME = "slinfer.v1.Worker"


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
    profile_grid: ProfileGrid = ProfileGrid()
    profile_dir: Path | None = None  # default: $SLINFER_HOME/profiles

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
            n = await eviction.unload(self.w, request)
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
        self.threads = config.num_threads or config.cores or (os.cpu_count() or 1)
        self.label = hardware_label(config.kind, self.threads)
        self.arbiter = DeviceArbiter(
            self.node_id,
            DeviceKind.GPU if config.kind == "gpu" else DeviceKind.CPU,
            self.label,
            config.memory_bytes,
        )
        self.device = Device(self.node_id, self.arbiter)
        self.profiles = ProfileCache(config.profile_dir)
        self.loader = ThreadPoolExecutor(1, thread_name_prefix=f"loader-{self.node_id}")
        self._lease_task: asyncio.Task[None] | None = None
        self._scale_task: asyncio.Task[None] | None = None
        self.instances = self.device.instances
        self.registration: Registration | None = None
        self.server: grpc.aio.Server | None = None
        self.address = ""
        self._loading: dict[str, asyncio.Future[Instance]] = {}
        self.memory = MemoryAgent(self)  # every allocation goes through the ledger

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> str:
        await self.store.connect()
        # Import the engine's libraries before serving (a fast first cold start).
        kind = default_engine(self.config.kind)
        prep_s = await asyncio.get_running_loop().run_in_executor(self.loader, prepare_engine, kind)
        logger.info("engine libraries ready in {:.2f}s", prep_s)
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
        self._lease_task = asyncio.create_task(
            watch_leases(self.store, self.node_id, self.arbiter.leases, self.device.wake),
            name="leases",
        )
        self._scale_task = asyncio.create_task(self._publish_perf_scales(), name="perf-scale")
        await self.memory.start()
        await set_serving(health, [SERVICE_NAME], True)
        logger.info("worker {} ({}) serving on {}", self.node_id, self.config.kind, self.address)
        return self.address

    async def stop(self, grace_s: float = 2.0) -> None:
        for inst in list(self.instances.values()):
            with contextlib.suppress(Exception):
                await self.unload_instance(inst.instance_id)
        await self.memory.stop()
        if self._scale_task:
            self._scale_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scale_task
        if self._lease_task:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
        if self.registration:
            await self.registration.stop()
        if self.server:
            await self.server.stop(grace_s)
        await self.device.stop()
        self.loader.shutdown(wait=True)
        await self.store.close()

    def node_record(self) -> dict[str, object]:
        return {
            "node_id": self.node_id,
            "kind": self.config.kind,
            "address": self.address,
            "cores": self.config.cores or (os.cpu_count() or 1),
            "label": self.label,
            "memory_bytes": self.config.memory_bytes,
            "started_at": time.time(),
        }

    async def _rewrite_instances(self, lease_id: int) -> None:
        for inst in list(self.instances.values()):
            await self.store.put(
                keys.instance(inst.instance_id), inst.record(self.node_id), lease=lease_id
            )

    async def _publish_perf_scales(self, every_s: float = 2.0) -> None:
        """Tell the scheduler when an instance runs >10 % off its tables (instance record)."""
        while True:
            await asyncio.sleep(every_s)
            for inst in list(self.instances.values()):
                scale = inst.perf_scale
                if inst.state is InstanceState.READY and abs(scale - inst.published_scale) > (
                    0.1 * inst.published_scale
                ):
                    inst.published_scale = scale
                    with contextlib.suppress(Exception):
                        await self._publish(inst)

    async def _publish(self, inst: Instance) -> None:
        assert self.registration is not None
        await self.store.put(
            keys.instance(inst.instance_id),
            inst.record(self.node_id),
            lease=self.registration.lease_id,
        )

    def memory_used_bytes(self) -> int:
        return self.memory.used_bytes()  # measured: weights + KV actually allocated

    # ---- instances -------------------------------------------------------------------------

    async def load_instance(self, req: worker_pb2.LoadInstanceRequest) -> tuple[Instance, bool]:
        return await loading.load_instance(self, req)

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
        await self.memory.release(inst)  # every unload (keep-alive, request, eviction) frees here
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
        ereq = EngineRequest(
            request_id=rid,
            prompt_token_ids=tuple(req.prompt_token_ids),
            sampling=sampling_from_pb(req.sampling),
            resumed_token_ids=tuple(req.resumed_token_ids),
        )
        queue: asyncio.Queue[RequestOutput | None] = asyncio.Queue()
        inst.streams[rid] = queue
        inst.requests[rid] = TrackedRequest.from_submit(rid, req)
        finished = False
        status = "error"
        try:
            await self.memory.add_request(inst, ereq)
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
            inst.requests.pop(rid, None)
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

    def instance_status(self, inst: Instance) -> common_pb2.InstanceStatus:
        return instance_status(self.node_id, inst)

    def stats(self) -> worker_pb2.WorkerStats:
        return worker_stats(self)
