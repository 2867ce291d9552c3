"""Nodes suspected dead: a worker broke a stream, so nothing new goes there (docs/RELIABILITY.md).

A worker's etcd lease says it is alive for up to its TTL after it died; a broken stream says
so at once. The scheduler that saw it marks the node suspect (`ClusterView.suspects`, local to
this process): placement and routing skip it, as they skip a draining node, and the broken
streams are re-dispatched elsewhere with the tokens the client has (relay.py). A suspect is
cleared when its worker answers a health check again, or when its node record goes (the
lease expired) or is rewritten by a new incarnation of the worker.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from grpc_health.v1 import health_pb2
from loguru import logger

from slinfer.services.cluster.state import ClusterWatcher
from slinfer.services.cluster.workers import WorkerClients


class Suspects:
    def __init__(
        self, watcher: ClusterWatcher, workers: WorkerClients, probe_every_s: float = 1.0
    ) -> None:
        self.watcher, self.workers, self.probe_every_s = watcher, workers, probe_every_s
        self._task: asyncio.Task[None] | None = None

    def mark(self, node_id: str, reason: str) -> None:
        view = self.watcher.view
        if node_id in view.suspects:
            return
        node = view.nodes.get(node_id)
        # The incarnation suspected: a restarted worker writes a new started_at.
        view.suspects[node_id] = str(node.started_at) if node is not None else ""
        logger.warning("node {} suspected dead ({}): nothing new goes there", node_id, reason)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._probe(), name="suspects")

    def clear(self, node_id: str, why: str) -> None:
        if self.watcher.view.suspects.pop(node_id, None) is not None:
            logger.info("node {} no longer suspect: {}", node_id, why)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _probe(self) -> None:
        while self.watcher.view.suspects:
            await asyncio.sleep(self.probe_every_s)
            view = self.watcher.view
            for node_id, incarnation in list(view.suspects.items()):
                node = view.nodes.get(node_id)
                if node is None:
                    self.clear(node_id, "its record is gone")
                elif str(node.started_at) != incarnation:
                    self.clear(node_id, "its worker restarted")
                elif await self._serving(node.address):
                    self.clear(node_id, "its worker answers again")

    async def _serving(self, address: str) -> bool:
        try:
            resp = await self.workers.health(address).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1.0
            )
        except (grpc.aio.AioRpcError, ValueError):
            return False
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
