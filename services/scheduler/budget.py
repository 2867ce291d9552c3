"""Token-budget leases (DESIGN.md §2): what a scheduler has admitted to each busy instance.

`/slinfer/leases/{node}/{instance}/{scheduler}` records the instance's time slice and the batch
it was computed for (read by GetClusterStatus and `slinfer top`) and the requests this
scheduler holds there — their arrival, SLOs, excused load time, sizes and last re-dispatch —
from which the consolidator, which owns no requests, builds its views (packing, T_move). The
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

from slinfer.policy import time_slice
from slinfer.policy.types import InstanceLike
from slinfer.services.cluster.tracker import Tracker
from slinfer.services.common import keys
from slinfer.services.common.store import Registration, Store
from slinfer.services.scheduler import metrics


class LeaseWriter:
    def __init__(
        self,
        store: Store,
        registration: Registration,
        tracker: Tracker,
        node_of: Callable[[str], str | None],
        view_of: Callable[[str], InstanceLike | None],
        scheduler_id: str,
        margin: float,
    ):
        self.store, self.registration, self.tracker = store, registration, tracker
        self.node_of, self.view_of, self.scheduler_id = node_of, view_of, scheduler_id
        self.margin = margin
        self._dirty: set[str] = set()
        self._written: dict[str, str] = {}  # instance -> key written
        self._gauged: dict[str, tuple[str, str, str]] = {}  # instance -> time-slice labels
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
            labels = self._gauged.pop(iid, None)
            if labels is not None:
                with contextlib.suppress(KeyError):
                    metrics.TIME_SLICE.remove(*labels)
            if key is not None:
                await self.store.delete(key)
            return
        key = keys.lease(node, iid, self.scheduler_id)
        view = self.view_of(iid)
        share = time_slice(view, self.margin) if view else None
        if share is not None:
            labels = (node, iid, requests[0].model_id)
            metrics.TIME_SLICE.labels(*labels).set(share)
            self._gauged[iid] = labels
        value = {
            "instance_id": iid,
            "scheduler": self.scheduler_id,
            "time_slice": share,
            "batch": len(self.tracker.load_on(iid)),  # every replica's requests there
            "requests": {r.request_id: r.lease_entry() for r in requests},
        }
        await self.store.put(key, value, lease=self.registration.lease_id)
        self._written[iid] = key
        self.writes += 1
