"""Readiness: the front is ready only when etcd and a gateway answer (liveness is separate)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from slinfer.services.common.store import Store
from slinfer.services.http.gateway import GatewayClient

CHECK_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Readiness:
    etcd: str  # "ok" or why not
    gateway: str

    @property
    def ready(self) -> bool:
        return self.etcd == "ok" and self.gateway == "ok"


class ReadinessProbe:
    def __init__(self, etcd: str, gateway: GatewayClient):
        # One attempt per check (no retry window): a probe must answer within its timeout.
        self.store = Store(etcd, timeout_s=CHECK_TIMEOUT_S, retry_s=0.0)
        self.gateway = gateway
        self._connected = False

    async def _etcd(self) -> str:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                if not self._connected:
                    await self.store.connect()
                    self._connected = True
                await self.store.get("/slinfer/ready-probe")
            return "ok"
        except Exception as exc:  # any failure means "not ready", with the reason
            self._connected = False
            with contextlib.suppress(Exception):
                await self.store.close()
            self.store = Store(self.store.endpoint, timeout_s=CHECK_TIMEOUT_S, retry_s=0.0)
            return f"etcd at {self.store.endpoint} does not answer: {type(exc).__name__}"

    async def _gateway(self) -> str:
        if await self.gateway.serving(CHECK_TIMEOUT_S):
            return "ok"
        return f"gateway at {self.gateway.target} is not serving"

    async def check(self) -> Readiness:
        etcd, gateway = await asyncio.gather(self._etcd(), self._gateway())
        return Readiness(etcd, gateway)

    async def close(self) -> None:
        await self.store.close()
