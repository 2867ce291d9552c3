"""Leader election through etcd, the Patroni way (STYLE.md).

Every replica tries to create `/slinfer/election/{kind}` only if it is absent, attached to a
lease of its own. The one that succeeds is the leader while it keeps that lease alive; if a
refresh fails or the lease has expired, it steps down at once (before acting again) and
competes like the others. The key's value names the leader's address, so schedulers and the
CLI find it by reading one key.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from loguru import logger

from slinfer.services.common import keys
from slinfer.services.common.store import Store


class LeaderElection:
    def __init__(self, store: Store, kind: str, value: dict[str, Any], ttl_s: int = 5):
        if ttl_s < 2:
            raise ValueError("the election lease TTL must be at least 2 s")
        self.store, self.kind, self.value, self.ttl_s = store, kind, value, ttl_s
        self.key = keys.election(kind)
        self.is_leader = False
        self.changed = asyncio.Event()
        self._lease: Any = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"election:{self.kind}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._lease is not None:
            with contextlib.suppress(Exception):
                await self._lease.revoke()  # hand leadership over at once
        self._set(False)

    def _set(self, leader: bool) -> None:
        if leader != self.is_leader:
            self.is_leader = leader
            logger.info("{} {} leadership", self.kind, "took" if leader else "lost")
            self.changed.set()

    async def _run(self) -> None:
        while True:
            try:
                if self.is_leader:
                    res = await self._lease.refresh()
                    if getattr(res, "TTL", 1) <= 0:
                        raise RuntimeError("election lease expired")
                else:
                    await self._campaign()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # lost the lease or etcd: step down before acting
                if self.is_leader:
                    logger.warning("{} stepping down: {}", self.kind, exc)
                self._set(False)
                self._lease = None
            await asyncio.sleep(self.ttl_s / 3)

    async def _campaign(self) -> None:
        lease = await self.store.grant_lease(self.ttl_s)
        if await self.store.create(self.key, self.value, lease=lease.id):
            self._lease = lease
            self._set(True)
            return
        with contextlib.suppress(Exception):
            await lease.revoke()
