"""The consolidator service: `slinfer.v1.Consolidator`, leader-elected through etcd.

Every replica registers its presence, watches the cluster and serves the API; only the
elected leader (election.py) acts. The others answer UNAVAILABLE naming the leader, so a
client can follow it. The mechanism is in consolidation.py, the decisions in policy.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
from loguru import logger

from slinfer.services.cluster.state import ClusterWatcher
from slinfer.services.cluster.workers import WorkerClients
from slinfer.services.common.auth import Authenticator
from slinfer.services.common.errors import status_of
from slinfer.services.common.policy_config import watch_policy
from slinfer.services.common.presence import PresenceService
from slinfer.services.consolidator import metrics
from slinfer.services.consolidator.consolidation import Consolidation, ConsolidatorConfig
from slinfer.services.consolidator.election import LeaderElection
from slinfer.v1 import consolidator_pb2, consolidator_pb2_grpc

SERVICE_NAME = "slinfer.v1.Consolidator"
KIND = "consolidator"
_OPERATOR_CALLS = {f"/{SERVICE_NAME}/{m}" for m in ("Preempt", "Drain", "ListPlans")}


class NotLeader(Exception):
    pass


class ConsolidatorServicer(consolidator_pb2_grpc.ConsolidatorServicer):
    def __init__(self, service: ConsolidatorService):
        self.s = service

    async def _run(self, context: grpc.aio.ServicerContext, fn: Any, *args: Any) -> Any:
        if not self.s.is_leader():
            leader = self.s.watcher.view.leaders.get(KIND, {}).get("address") or "not elected yet"
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"this consolidator replica is not the leader; the leader is at {leader}",
            )
        try:
            return await fn(*args)
        except Exception as exc:
            code, message = status_of(exc)
            if code == grpc.StatusCode.INTERNAL:
                logger.exception("consolidator call failed: {}", exc)
            await context.abort(code, message)

    async def CarryOutPreemption(self, request, context):  # noqa: N802
        return await self._run(context, self.s.consolidation.carry_out_preemption, request)

    async def Preempt(self, request, context):  # noqa: N802
        return await self._run(context, self.s.consolidation.preempt, request.instance_id)

    async def Drain(self, request, context):  # noqa: N802
        return await self._run(
            context, self.s.consolidation.drain, request.node_id, request.undo, request.timeout_s
        )

    async def ListPlans(self, request, context):  # noqa: N802
        return consolidator_pb2.ListPlansResponse(
            plans=self.s.consolidation.plans.recent(request.limit or 50),
            leader=self.s.is_leader(),
            advisory=self.s.config.advisory,
        )


class ConsolidatorService:
    def __init__(self, config: ConsolidatorConfig):
        self.config = config
        self.presence = PresenceService(
            KIND,
            config.etcd,
            config.listen,
            servicers=[
                lambda s: consolidator_pb2_grpc.add_ConsolidatorServicer_to_server(
                    ConsolidatorServicer(self), s
                )
            ],
            service_names=[SERVICE_NAME],
            security=config.security,
            # Operators call with an admin API key; CarryOutPreemption is the schedulers'
            # (cluster token only).
            accept=lambda method, key: method in _OPERATOR_CALLS and self.auth.valid_admin(key),
        )
        self.store = self.presence.store
        self.watcher = ClusterWatcher(self.store)
        self.auth = Authenticator(lambda: self.watcher.view.api_keys, config.security.insecure)
        self.workers = WorkerClients()
        self.election: LeaderElection | None = None
        self.consolidation = Consolidation(
            config,
            self.store,
            self.watcher,
            self.workers,
            self.is_leader,
            self.presence.service_id,
        )
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def address(self) -> str:
        return self.presence.address

    def is_leader(self) -> bool:
        return self.election is not None and self.election.is_leader

    async def start(self) -> str:
        address = await self.presence.start()
        await self.watcher.start()
        self.election = LeaderElection(
            self.store,
            KIND,
            {
                "address": address,
                "service_id": self.presence.service_id,
                "advisory": self.config.advisory,
                "system": self.config.system.value,
            },
            ttl_s=self.config.election_ttl_s,
        )
        self.election.start()
        self._tasks.append(asyncio.create_task(self._gauges(), name="leader-gauge"))
        self._tasks.append(
            asyncio.create_task(
                watch_policy(self.store, self.consolidation.configure), name="policy"
            )
        )
        if self.config.pack:
            self._tasks.append(
                asyncio.create_task(self.consolidation.pack_loop(), name="bin-packing")
            )
        logger.info(
            "consolidator {} system={} advisory={} pack_every_s={}",
            self.presence.service_id,
            self.config.system.value,
            self.config.advisory,
            self.config.pack_every_s if self.config.pack else "off",
        )
        return address

    async def _gauges(self) -> None:
        while True:
            metrics.LEADER.set(1 if self.is_leader() else 0)
            metrics.NODES_IN_USE.set(len(self.watcher.view.nodes_in_use()))
            await asyncio.sleep(1.0)

    async def stop(self, grace_s: float = 2.0) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self.election is not None:
            await self.election.stop()
        await self.watcher.stop()
        await self.workers.close()
        await self.presence.stop(grace_s)


def create(etcd: str, listen: str = "127.0.0.1:0", **options: Any) -> ConsolidatorService:
    return ConsolidatorService(ConsolidatorConfig(etcd=etcd, listen=listen, **options))
