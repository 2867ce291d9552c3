"""A service process that is up, registered in etcd and healthy, before it has an API.

The memory service and the consolidator start from this: they connect to etcd, register
`/slinfer/services/{kind}/{id}` under a lease they keep alive, and serve health and
reflection. Their mechanisms (DESIGN.md §3, §4) add servicers to the same server.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import grpc
from loguru import logger

from slinfer.services.common import keys
from slinfer.services.common.security import BearerGate, Security, bind, configure
from slinfer.services.common.serving import make_server, set_serving
from slinfer.services.common.store import Registration, Store


class PresenceService:
    def __init__(
        self,
        kind: str,
        etcd: str,
        listen: str = "127.0.0.1:0",
        servicers: list[Callable[[grpc.aio.Server], None]] | None = None,
        service_names: list[str] | None = None,
        security: Security | None = None,
        accept: Callable[[str, str], bool] | None = None,
    ):
        self.kind = kind
        self.security = security if security is not None else Security.from_env()
        self.accept = accept  # API keys this service takes (security.BearerGate)
        self.service_id = uuid.uuid4().hex[:8]
        self.listen = listen
        self.store = Store(etcd)
        self._servicers = servicers or []
        self._names = service_names or []
        self.server: grpc.aio.Server | None = None
        self.registration: Registration | None = None
        self.address = ""

    async def start(self) -> str:
        self.security.check_listen(self.listen)
        configure(self.security)
        await self.store.connect()
        self.server, health = make_server(
            self._servicers,
            self._names,
            interceptors=[BearerGate(self.security, self.accept)],
        )
        host, _, _ = self.listen.rpartition(":")
        port = bind(self.server, self.listen, self.security)
        self.address = f"{host}:{port}"
        await self.server.start()
        self.registration = Registration(
            self.store,
            keys.service(self.kind, self.service_id),
            {"address": self.address, "started_at": time.time()},
        )
        await self.registration.start()
        await set_serving(health, self._names, True)
        logger.info("{} {} serving on {}", self.kind, self.service_id, self.address)
        return self.address

    async def stop(self, grace_s: float = 2.0) -> None:
        if self.server:
            await self.server.stop(grace_s)
        if self.registration:
            await self.registration.stop()
        await self.store.close()
