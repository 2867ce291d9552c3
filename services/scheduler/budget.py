"""Token-budget leases (DESIGN.md §2): the scheduler's budget for each busy instance.

`/slinfer/leases/{node}/{instance}` holds the instance's time slice, the batch it was
computed for, and the deadline inputs of its requests; the worker's arbiter reads them. The
keys live under the scheduler's own etcd lease (its registration), which it keeps alive: if
the scheduler dies, its budgets expire with it, and the worker finishes what it admitted on
the deadlines the requests carried. Changes are coalesced and written by one task.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from loguru import logger

from slinfer.policy import DEFAULT_CONFIG, time_slice
from slinfer.policy.types import InstanceLike
from slinfer.services.common import keys
from slinfer.services.common.store import Registration, Store
from slinfer.services.scheduler.tracker import Tracker


class LeaseWriter:
    def __init__(
        self,
        store: Store,
        registration: Registration,
        tracker: Tracker,
        node_of: Callable[[str], str | None],
        view_of: Callable[[str], InstanceLike | None],
        scheduler_id: str,
    ):
        self.store, self.registration, self.tracker = store, registration, tracker
        self.node_of, self.view_of, self.scheduler_id = node_of, view_of, scheduler_id
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
        view = self.view_of(iid)
        key = keys.lease(node, iid)
        value = {
            "instance_id": iid,
            "scheduler": self.scheduler_id,
            "time_slice": time_slice(view, DEFAULT_CONFIG.slo_margin) if view else None,
            "batch": len(requests),
            "requests": {r.request_id: r.lease_entry() for r in requests},
        }
        await self.store.put(key, value, lease=self.registration.lease_id)
        self._written[iid] = key
        self.writes += 1
