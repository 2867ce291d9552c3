"""Token-budget leases (DESIGN.md §2): what a scheduler has admitted to each busy instance.

`/slinfer/leases/{node}/{instance}/{scheduler}` lists the requests this scheduler holds on the
instance
— their arrival, SLOs, excused load time, sizes and last re-dispatch — from which their
deadlines, and so the instance's time slice, follow by the policy core. Its reader is the
consolidator, which owns no requests and builds its views (packing, T_move) from these. The
worker does not read them: deadlines reach it once, in each request's Submit. Other scheduler
replicas read them too: an instance's load, its KV demand and whether it is idle are what
every replica holds on it, not one replica's share (`Tracker.load_on`). The keys live under
the scheduler's own etcd lease (its registration), so a vanished scheduler's budgets expire
with it. Changes are coalesced and written by one task.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from loguru import logger

from slinfer.services.cluster.tracker import Tracker
from slinfer.services.common import keys
from slinfer.services.common.store import Registration, Store


class LeaseWriter:
    def __init__(
        self,
        store: Store,
        registration: Registration,
        tracker: Tracker,
        node_of: Callable[[str], str | None],
        scheduler_id: str,
    ):
        self.store, self.registration, self.tracker = store, registration, tracker
        self.node_of, self.scheduler_id = node_of, scheduler_id
        self._dirty: set[str] = set()
        self._written: dict[str, str] = {}  # instance -> key written
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.writes = 0

    def touch(self, instance_id: str) -> None:
        self._dirty.add(instance_id)
        self._event.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="budget-leases")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._event.wait()
            self._event.clear()
            await asyncio.sleep(0.02)  # coalesce a burst of admissions into one write each
            dirty, self._dirty = self._dirty, set()
            for iid in dirty:
                try:
                    await self._flush(iid)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a lease is advisory for one cycle; retry later
                    logger.warning("lease write for instance={} failed: {}", iid, exc)
                    self._dirty.add(iid)
                    self._event.set()
                    await asyncio.sleep(0.5)

    async def _flush(self, iid: str) -> None:
        requests = self.tracker.requests_on(iid)
        node = self.node_of(iid)
        if not requests or node is None:
            key = self._written.pop(iid, None)
            if key is not None:
                await self.store.delete(key)
            return
        key = keys.lease(node, iid, self.scheduler_id)
        value = {
            "instance_id": iid,
            "scheduler": self.scheduler_id,
            "requests": {r.request_id: r.lease_entry() for r in requests},
        }
        await self.store.put(key, value, lease=self.registration.lease_id)
        self._written[iid] = key
        self.writes += 1
