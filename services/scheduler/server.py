"""Scheduler service: serves the client-facing `slinfer.v1.Gateway` API.

It keeps a list+watch view of etcd, validates and tokenises requests, routes them to
instances (starting instances on demand), streams the tokens back and owns every request's
stream for its whole life.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from loguru import logger

from slinfer.policy import SloPolicy
from slinfer.services.common import keys
from slinfer.services.common.convert import FINISH_FROM_PB, sampling_from_pb
from slinfer.services.common.errors import InvalidArgument, ModelNotFound, status_of
from slinfer.services.common.serving import make_server, set_serving
from slinfer.services.common.store import Registration, Store
from slinfer.services.scheduler import metrics, models
from slinfer.services.scheduler.budget import LeaseWriter
from slinfer.services.scheduler.dispatch import DispatchConfig, Dispatcher
from slinfer.services.scheduler.prompts import Message, Prompts
from slinfer.services.scheduler.state import ClusterWatcher
from slinfer.services.scheduler.status import cluster_status
from slinfer.services.scheduler.tracker import LiveRequest
from slinfer.services.scheduler.workers import WorkerClients
from slinfer.services.worker.engine.base import FinishReason
from slinfer.v1 import gateway_pb2, gateway_pb2_grpc, worker_pb2

SERVICE_NAME = "slinfer.v1.Gateway"


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    etcd: str
    listen: str = "127.0.0.1:0"
    default_keep_alive_s: float = 300.0
    default_tpot_slo_s: float = 0.25
    reclaim_every_s: float = 2.0
    dispatch: DispatchConfig = DispatchConfig()

    def __post_init__(self) -> None:
        if self.default_keep_alive_s < 0 or self.reclaim_every_s <= 0:
            raise ValueError("keep-alive must be >= 0 and the reclaim period > 0")


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, s: SchedulerService):
        self.s = s

    async def Generate(self, request, context) -> AsyncIterator[gateway_pb2.GenerateResponse]:  # noqa: N802
        rid = request.request_id or uuid.uuid4().hex
        model_id = request.model
        status = "error"
        try:
            async for resp in self.s.generate(request, rid):
                if resp.HasField("final"):
                    status = FINISH_FROM_PB.get(resp.final.finish_reason, FinishReason.STOP).value
                yield resp
        except asyncio.CancelledError:
            status = "cancelled"
            logger.info("client gone: request={} model={}", rid, model_id)
            raise
        except Exception as exc:
            code, message = status_of(exc)
            status = code.name.lower()
            if code == grpc.StatusCode.INTERNAL:
                logger.exception("generate failed: request={} model={}", rid, model_id)
            await context.abort(code, message)
        finally:
            if model_id in self.s.watcher.view.models:
                metrics.REQUESTS.labels(model_id, status).inc()

    async def DeployModel(self, request, context):  # noqa: N802
        try:
            spec = models.spec_from_request(request)
            await models.deploy(self.s.store, spec)
            # Read-your-writes: the watch event may trail the answer to this call.
            self.s.watcher.view.apply(keys.model(spec["model_id"]), spec)
            logger.info("deployed model={} path={}", spec["model_id"], spec["path"])
            return gateway_pb2.DeployModelResponse(
                model=models.model_info(spec, 0, self.s.defaults)
            )
        except Exception as exc:
            await _abort(context, exc)

    async def DeleteModel(self, request, context):  # noqa: N802
        try:
            return gateway_pb2.DeleteModelResponse(
                instances_unloaded=await self.s.delete_model(request.model_id)
            )
        except Exception as exc:
            await _abort(context, exc)

    async def ListModels(self, request, context):  # noqa: N802
        view = self.s.watcher.view
        infos = [
            models.model_info(spec, len(view.instances_of(mid)), self.s.defaults)
            for mid, spec in sorted(view.models.items())
        ]
        return gateway_pb2.ListModelsResponse(models=infos)

    async def GetClusterStatus(self, request, context):  # noqa: N802
        try:
            return await cluster_status(self.s.watcher.view, self.s.workers)
        except Exception as exc:
            await _abort(context, exc)


async def _abort(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    code, message = status_of(exc)
    if code == grpc.StatusCode.INTERNAL:
        logger.exception("gateway call failed: {}", exc)
    await context.abort(code, message)


class SchedulerService:
    def __init__(self, config: SchedulerConfig):
        self.config = config
        self.service_id = uuid.uuid4().hex[:8]
        self.store = Store(config.etcd)
        self.watcher = ClusterWatcher(self.store)
        self.workers = WorkerClients()
        self.dispatcher = Dispatcher(self.watcher, self.workers, config.dispatch)
        self.prompts = Prompts()
        self.dispatcher.tokenizer_of = self.prompts.tokenizer
        self.server: grpc.aio.Server | None = None
        self.registration: Registration | None = None
        self.leases: LeaseWriter | None = None
        self.address = ""
        self._tasks: list[asyncio.Task[None]] = []
        self.defaults = {
            "tpot_slo_s": config.default_tpot_slo_s,
            "keep_alive_s": config.default_keep_alive_s,
            "kv_capacity_tokens": float(config.dispatch.default_kv_capacity_tokens),
        }

    async def start(self) -> str:
        await self.store.connect()
        await self.watcher.start()
        self.server, health = make_server(
            [lambda s: gateway_pb2_grpc.add_GatewayServicer_to_server(GatewayServicer(self), s)],
            [SERVICE_NAME],
        )
        host, _, _ = self.config.listen.rpartition(":")
        port = self.server.add_insecure_port(self.config.listen)
        self.address = f"{host}:{port}"
        await self.server.start()
        self.registration = Registration(
            self.store,
            keys.service("scheduler", self.service_id),
            {"address": self.address, "started_at": time.time()},
        )
        await self.registration.start()
        self.leases = LeaseWriter(
            self.store,
            self.registration,
            self.dispatcher.tracker,
            self.dispatcher.node_of,
            self.dispatcher.instance_view,
            self.service_id,
        )
        self.leases.start()
        self.dispatcher.on_change = self.leases.touch
        self._tasks.append(asyncio.create_task(self._reclaim_loop(), name="keep-alive"))
        self._tasks.append(asyncio.create_task(self._gauge_loop(), name="gauges"))
        await set_serving(health, [SERVICE_NAME], True)
        logger.info("scheduler {} serving Gateway on {}", self.service_id, self.address)
        return self.address

    async def stop(self, grace_s: float = 2.0) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self.server:
            await self.server.stop(grace_s)
        if self.leases is not None:
            await self.leases.stop()
        await self.dispatcher.kv.stop()
        if self.registration:
            await self.registration.stop()
        await self.watcher.stop()
        await self.workers.close()
        await self.dispatcher.preemption.close()
        await self.store.close()

    async def _reclaim_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.reclaim_every_s)
            try:
                await self.dispatcher.reclaim_idle(
                    self.config.default_keep_alive_s, time.monotonic()
                )
            except Exception as exc:  # one bad cycle must not stop reclaiming
                logger.warning("keep-alive cycle failed: {}", exc)

    async def _gauge_loop(self) -> None:
        while True:
            view = self.watcher.view
            for node_id in view.nodes:
                metrics.INSTANCES.labels(node_id).set(len(view.instances_on(node_id)))
            await asyncio.sleep(2.0)

    # ---- requests --------------------------------------------------------------------------

    async def generate(
        self, request: gateway_pb2.GenerateRequest, rid: str
    ) -> AsyncIterator[gateway_pb2.GenerateResponse]:
        arrival, arrival_wall = time.monotonic(), time.time()
        if not request.model:
            raise InvalidArgument("model is required")
        model = self.watcher.view.models.get(request.model)
        if model is None and keys.valid_name(request.model):
            # Deployed through another replica a moment ago? Ask etcd, not the watch.
            entry = await self.store.get(keys.model(request.model))
            model = entry.value if entry is not None else None
        if model is None:
            raise ModelNotFound(f"model {request.model} is not deployed (see ListModels)")
        sampling = sampling_from_pb(request.sampling)
        messages = [Message(m.role, m.content) for m in request.messages]
        prompt_ids = await asyncio.to_thread(
            self.prompts.encode,
            model["path"],
            request.prompt,
            messages,
            list(request.prompt_token_ids),
            int(model.get("vocab_size", 0)),
        )
        max_len = int(model.get("max_model_len", 0))
        if max_len and len(prompt_ids) + sampling.max_tokens > max_len:
            raise InvalidArgument(
                f"prompt ({len(prompt_ids)} tokens) + max_tokens ({sampling.max_tokens}) "
                f"exceeds the model's context of {max_len} tokens; shorten the prompt or "
                "lower max_tokens"
            )
        slo = SloPolicy(tpot_s=float(model.get("tpot_slo_s") or self.config.default_tpot_slo_s))
        live = LiveRequest(
            request_id=rid,
            model_id=request.model,
            arrival_s=arrival_wall,
            input_tokens=len(prompt_ids),
            ttft_slo_s=float(model.get("ttft_slo_s") or slo.ttft_s(len(prompt_ids))),
            tpot_slo_s=slo.tpot_s,
        )
        first_at: float | None = None
        last_at = arrival
        final: worker_pb2.SubmitResponse | None = None
        placement = None
        async for placed, resp in self.dispatcher.generate(model, live, prompt_ids, sampling):
            placement = placed
            now = time.monotonic()
            if resp.token_ids and first_at is None:
                first_at = now
            if resp.token_ids:
                last_at = now
            if resp.text:
                yield gateway_pb2.GenerateResponse(
                    request_id=rid,
                    chunk=gateway_pb2.TextChunk(text=resp.text, tokens=len(resp.token_ids)),
                )
            if resp.finished:
                final = resp
        assert final is not None and placement is not None
        ttft = (first_at or last_at) - arrival
        n = final.completion_tokens
        tpot = (last_at - first_at) / (n - 1) if first_at is not None and n > 1 else 0.0
        metrics.TTFT.labels(request.model).observe(ttft)
        if n > 1:
            metrics.TPOT.labels(request.model).observe(tpot)
        yield gateway_pb2.GenerateResponse(
            request_id=rid,
            final=gateway_pb2.Completion(
                finish_reason=final.finish_reason,
                prompt_tokens=final.prompt_tokens or len(prompt_ids),
                completion_tokens=n,
                ttft_s=ttft,
                tpot_s=tpot,
                load_s=placement.load_s,
                instance_id=placement.instance_id,
                node_id=placement.node_id,
            ),
        )

    async def delete_model(self, model_id: str) -> int:
        spec = await models.delete(self.store, model_id)
        self.watcher.view.apply(keys.model(model_id), None)
        self.prompts.forget(spec.get("path", ""))
        unloaded = 0
        view = self.watcher.view
        for inst in view.instances_of(model_id):
            node = view.nodes.get(inst.get("node_id", ""))
            if node is None:
                continue
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self.workers.stub(node["address"]).UnloadInstance(
                    worker_pb2.UnloadInstanceRequest(instance_id=inst["instance_id"]),
                    timeout=self.config.dispatch.rpc_timeout_s,
                )
                unloaded += 1
        logger.info("deleted model={} unloaded={}", model_id, unloaded)
        return unloaded
