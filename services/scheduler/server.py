"""Scheduler service: serves the client-facing `slinfer.v1.Gateway` API.

It keeps a list+watch view of etcd, authenticates callers (API keys, auth.py; off only with
`--insecure` on loopback), validates and tokenises requests (generate.py), routes them to
instances (starting instances on demand), streams the tokens back and owns every request's
stream for its whole life. Any number of replicas may serve at once (docs/RELIABILITY.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field

import grpc
from loguru import logger

from slinfer.services.cluster.state import ClusterWatcher
from slinfer.services.cluster.suspects import Suspects
from slinfer.services.cluster.tracker import request_from_lease
from slinfer.services.cluster.workers import WorkerClients
from slinfer.services.common import keys, security
from slinfer.services.common.auth import Authenticator, Principal
from slinfer.services.common.errors import status_of, trailers_of
from slinfer.services.common.policy_config import publish_policy
from slinfer.services.common.security import BearerGate, Security
from slinfer.services.common.serving import make_server, set_serving
from slinfer.services.common.store import Registration, Store
from slinfer.services.scheduler import metrics
from slinfer.services.scheduler.budget import LeaseWriter
from slinfer.services.scheduler.dispatch import DispatchConfig, Dispatcher
from slinfer.services.scheduler.gateway_calls import GatewayCalls
from slinfer.services.scheduler.generate import generate
from slinfer.services.scheduler.outputs import publish_outputs
from slinfer.services.scheduler.prompts import Prompts
from slinfer.services.scheduler.registry import RequestRegistry, check_request_id
from slinfer.services.scheduler.request_metrics import ActiveRequests
from slinfer.v1 import gateway_pb2_grpc

SERVICE_NAME = "slinfer.v1.Gateway"


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    etcd: str
    listen: str = "127.0.0.1:0"
    default_keep_alive_s: float = 300.0
    default_tpot_slo_s: float = 0.25
    reclaim_every_s: float = 2.0
    dispatch: DispatchConfig = DispatchConfig()
    # Authentication and TLS (security.py): secure unless `Security(insecure=True)`.
    security: Security = field(default_factory=Security.from_env)

    def __post_init__(self) -> None:
        if self.default_keep_alive_s < 0 or self.reclaim_every_s <= 0:
            raise ValueError("keep-alive must be >= 0 and the reclaim period > 0")


class GatewayServicer(GatewayCalls, gateway_pb2_grpc.GatewayServicer):
    async def Generate(self, request, context) -> None:  # noqa: N802
        rid = request.request_id or uuid.uuid4().hex
        model_id = request.model
        try:
            principal: Principal = self.s.auth.principal(context.invocation_metadata())
            check_request_id(rid)
            async with self.s.registry.hold(principal, rid, request.HasField("resume")):
                stream = generate(self.s, request, rid, principal)
                async with contextlib.aclosing(stream):
                    async for resp in stream:
                        await context.write(resp)
        except asyncio.CancelledError:
            self.s.count_error(model_id, "cancelled")
            logger.info("client gone: request={} model={}", rid, model_id)
            raise
        except Exception as exc:
            code, message = status_of(exc)
            self.s.count_error(model_id, code.name.lower())
            if code == grpc.StatusCode.INTERNAL:
                logger.opt(exception=exc).error(
                    "generate failed: request={} model={}", rid, model_id
                )
            context.set_trailing_metadata(trailers_of(exc))
            await context.abort(code, message)


class SchedulerService:
    def __init__(self, config: SchedulerConfig):
        self.config = config
        self.service_id = uuid.uuid4().hex[:8]
        self.store = Store(config.etcd)
        self.watcher = ClusterWatcher(self.store)
        self.workers = WorkerClients()
        self.suspects = Suspects(self.watcher, self.workers)
        self.dispatcher = Dispatcher(self.watcher, self.workers, config.dispatch, self.suspects)
        # The requests other replicas hold on an instance, from their leases (budget.py).
        self.dispatcher.tracker.foreign = self._foreign_requests
        self.prompts = Prompts()
        self.active = ActiveRequests()
        self.auth = Authenticator(lambda: self.watcher.view.api_keys, config.security.insecure)
        self.registry = RequestRegistry(
            self.store,
            self.service_id,
            lambda: self.registration.lease_id if self.registration is not None else None,
            lambda: self.watcher.view.tenants,
        )
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

    def _foreign_requests(self, instance_id: str) -> list:  # noqa: ANN201
        leased = self.watcher.view.lease_requests(instance_id, but=self.service_id)
        return [
            request_from_lease(rid, entry)
            for rid, entry in leased.items()
            if not self.registry.holds(rid)  # our own request's earlier incarnation
        ]

    async def start(self) -> str:
        sec = self.config.security
        sec.check_listen(self.config.listen)
        security.configure(sec)
        await self.store.connect()
        await self.watcher.start()
        gate = BearerGate(sec, lambda _method, key: self.auth.valid(key))
        self.server, health = make_server(
            [lambda s: gateway_pb2_grpc.add_GatewayServicer_to_server(GatewayServicer(self), s)],
            [SERVICE_NAME],
            interceptors=[gate],
        )
        host, _, _ = self.config.listen.rpartition(":")
        port = security.bind(self.server, self.config.listen, sec)
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
            self.config.dispatch.policy.slo_margin,
        )
        self.leases.start()
        self.dispatcher.on_change = self.leases.touch
        # The policy every part decides with (common/policy_config.py).
        await publish_policy(self.store, self.config.dispatch.policy)
        self._tasks.append(asyncio.create_task(self._reclaim_loop(), name="keep-alive"))
        self._tasks.append(asyncio.create_task(self._gauge_loop(), name="gauges"))
        self._tasks.append(
            asyncio.create_task(
                publish_outputs(self.store, self.dispatcher.tracker, self.watcher.view_apply),
                name="outputs",
            )
        )
        await set_serving(health, [SERVICE_NAME], True)
        logger.info(
            "scheduler {} serving Gateway on {} (auth {}, tls {})",
            self.service_id,
            self.address,
            "off: --insecure" if sec.insecure else "on",
            "on" if sec.tls else "off",
        )
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
        await self.suspects.stop()
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
        published_waiting = 0
        while True:
            view = self.watcher.view
            kinds: dict[str, int] = {}
            for node_id, node in view.nodes.items():
                metrics.INSTANCES.labels(node_id).set(len(view.instances_on(node_id)))
                kind = node.kind.value
                kinds[kind] = kinds.get(kind, 0) + 1
            for kind in {"cpu", "gpu", *kinds}:
                metrics.NODES.labels(kind).set(kinds.get(kind, 0))
            # How many requests wait for capacity: packing never runs while any does.
            waiting = self.dispatcher.waiting
            if waiting != published_waiting and self.registration is not None:
                with contextlib.suppress(Exception):
                    await self.registration.update({**self.registration.value, "waiting": waiting})
                    published_waiting = waiting
            await asyncio.sleep(0.5)

    def count_error(self, model_id: str, code: str) -> None:
        """Errors of deployed models only: an unknown name must not grow the label set."""
        if model_id in self.watcher.view.models:
            metrics.REQUEST_ERRORS.labels(model_id, code).inc()
