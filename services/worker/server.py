"""Worker service: hosts model instances on one node (a CPU socket or a GPU).

The worker registers its node in etcd under a lease it keeps alive, writes one key per
instance under the same lease (so a dead worker's instances vanish with it), and serves the
internal `slinfer.v1.Worker` API to the scheduler. Its parts share one node context
(node.py): the instances' lifecycle (lifecycle.py), their request streams (requests.py), the
memory ledger's side (memory_agent.py) and the Stats answer (status.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import grpc
from loguru import logger

from slinfer.policy import PolicyConfig
from slinfer.services.common import security
from slinfer.services.common.convert import FINISH_TO_PB
from slinfer.services.common.errors import status_of
from slinfer.services.common.policy_config import watch_policy
from slinfer.services.common.security import BearerGate
from slinfer.services.common.serving import make_server, set_serving
from slinfer.services.worker.engine.registry import default_engine, prepare_engine
from slinfer.services.worker.gauges import WorkerGauges
from slinfer.services.worker.instance import Instance
from slinfer.services.worker.lifecycle import Lifecycle
from slinfer.services.worker.memory_agent import MemoryAgent
from slinfer.services.worker.node import NodeContext, WorkerConfig
from slinfer.services.worker.profiler import ProfileCache
from slinfer.services.worker.requests import Requests
from slinfer.services.worker.status import instance_status, worker_stats
from slinfer.v1 import common_pb2, worker_pb2, worker_pb2_grpc

SERVICE_NAME = "slinfer.v1.Worker"

__all__ = ["SERVICE_NAME", "WorkerConfig", "WorkerService"]


class WorkerServicer(worker_pb2_grpc.WorkerServicer):
    def __init__(self, worker: WorkerService):
        self.w = worker

    async def LoadInstance(self, request, context):  # noqa: N802
        try:
            inst, already = await self.w.lifecycle.load(request)
            return worker_pb2.LoadInstanceResponse(
                instance=self.w.instance_status(inst), already_loaded=already
            )
        except Exception as exc:
            await _abort(context, exc)

    async def UnloadInstance(self, request, context):  # noqa: N802
        try:
            lifecycle = self.w.lifecycle
            if request.preempt:
                n = await lifecycle.evict(request.instance_id)
            else:
                n = await lifecycle.unload(request.instance_id, request.min_idle_s)
            return worker_pb2.UnloadInstanceResponse(requests_aborted=n)
        except Exception as exc:
            await _abort(context, exc)

    async def Submit(self, request, context) -> AsyncIterator[worker_pb2.SubmitResponse]:  # noqa: N802
        try:
            async for out in self.w.requests.submit(request):
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
                    error=out.error,
                )
        except Exception as exc:
            await _abort(context, exc)

    async def Abort(self, request, context):  # noqa: N802
        try:
            return worker_pb2.AbortResponse(
                aborted=await self.w.requests.abort(request.instance_id, request.request_id)
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
        self.node = NodeContext(config)
        self.memory = MemoryAgent(self.node)  # every allocation goes through the ledger
        self.lifecycle = Lifecycle(self.node, self.memory, ProfileCache(config.profile_dir))
        self.requests = Requests(self.node, self.memory)
        self.server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # What tests, benches and the memory agent's callers read off a worker.
    @property
    def node_id(self) -> str:
        return self.node.node_id

    @property
    def address(self) -> str:
        return self.node.address

    @property
    def store(self):  # noqa: ANN201 - the node's etcd Store
        return self.node.store

    @property
    def instances(self) -> dict[str, Instance]:
        return self.node.instances

    @property
    def device(self):  # noqa: ANN201 - the node's Device
        return self.node.device

    @property
    def arbiter(self):  # noqa: ANN201 - the node's DeviceArbiter
        return self.node.arbiter

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> str:
        node = self.node
        self.config.security.check_listen(self.config.listen)
        security.configure(self.config.security)
        await node.store.connect()
        # Import the engine's libraries before serving (a fast first cold start).
        kind = default_engine(self.config.kind)
        loop = asyncio.get_running_loop()
        prep_s = await loop.run_in_executor(self.lifecycle.loader, prepare_engine, kind)
        logger.info("engine libraries ready in {:.2f}s", prep_s)
        self.server, health = make_server(
            [lambda s: worker_pb2_grpc.add_WorkerServicer_to_server(WorkerServicer(self), s)],
            [SERVICE_NAME],
            interceptors=[BearerGate(self.config.security)],
        )
        host, _, _ = self.config.listen.rpartition(":")
        port = security.bind(self.server, self.config.listen, self.config.security)
        if host in ("0.0.0.0", "[::]", ""):
            host = socket.gethostname()
        node.address = self.config.advertise or f"{host}:{port}"
        await self.server.start()
        node.device.start()
        await node.register()
        self._tasks = [
            asyncio.create_task(node.publish_calibration(), name="node-calibration"),
            asyncio.create_task(watch_policy(node.store, self._configure), name="policy"),
            asyncio.create_task(WorkerGauges(self).run(), name="gauges"),
        ]
        await self.memory.start()
        await set_serving(health, [SERVICE_NAME], True)
        logger.info(
            "worker {} ({}, cpu dtype {}) serving on {}",
            node.node_id,
            self.config.kind,
            self.config.cpu_dtype.value,
            node.address,
        )
        return node.address

    def _configure(self, config: PolicyConfig) -> None:
        self.node.arbiter.configure(config)

    async def stop(self, grace_s: float = 2.0) -> None:
        node = self.node
        for inst in list(node.instances.values()):
            with contextlib.suppress(Exception):
                await self.lifecycle.unload(inst.instance_id)
        await self.memory.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if node.registration:
            await node.registration.stop()
        if self.server:
            await self.server.stop(grace_s)
        await node.device.stop()
        self.lifecycle.close()
        await node.store.close()

    # ---- calls kept on the service for tests and benches -----------------------------------

    async def unload_instance(self, instance_id: str) -> int:
        return await self.lifecycle.unload(instance_id)

    def node_record(self) -> dict[str, object]:
        return self.node.node_record()

    def memory_used_bytes(self) -> int:
        return self.memory.used_bytes()  # measured: weights + KV actually allocated

    def instance_status(self, inst: Instance) -> common_pb2.InstanceStatus:
        return instance_status(self.node.node_id, inst)

    def stats(self) -> worker_pb2.WorkerStats:
        return worker_stats(self.node, self.memory)
