"""The scheduler's view of the cluster: nodes, models and instances, listed then watched.

Level-triggered like a Kubernetes informer: list everything under /slinfer/ at revision R,
watch from R + 1, and on any watch failure list again. The view is rebuilt from scratch on
start, which is what makes a restarted scheduler whole again.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from slinfer.services.common import keys
from slinfer.services.common.store import Store


@dataclass
class ClusterView:
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    # model -> hardware label -> measured tables (profiles format)
    profiles: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # instance -> token-budget lease; node -> drain mark; service kind -> elected leader
    leases: dict[str, dict[str, Any]] = field(default_factory=dict)
    drains: dict[str, dict[str, Any]] = field(default_factory=dict)
    leaders: dict[str, dict[str, Any]] = field(default_factory=dict)
    # node -> the memory service's ledger document (services/memory/state.py)
    ledgers: dict[str, dict[str, Any]] = field(default_factory=dict)
    revision: int = 0

    def apply(self, key: str, value: dict[str, Any] | None) -> None:
        if key.startswith(keys.PROFILES):
            model_id, _, label = keys.tail(key, keys.PROFILES).partition("/")
            if value is None:
                self.profiles.get(model_id, {}).pop(label, None)
            else:
                self.profiles.setdefault(model_id, {})[label] = value
            return
        if key.startswith(keys.LEASES):
            _, _, iid = keys.tail(key, keys.LEASES).partition("/")
            if value is None:
                self.leases.pop(iid, None)
            else:
                self.leases[iid] = value
            return
        for prefix, table in (
            (keys.DRAIN, self.drains),
            (keys.ELECTION, self.leaders),
            (keys.NODES, self.nodes),
            (keys.MODELS, self.models),
            (keys.INSTANCES, self.instances),
            (keys.SERVICES, self.services),
            (keys.MEMORY, self.ledgers),
        ):
            if key.startswith(prefix):
                name = keys.tail(key, prefix)
                if value is None:
                    table.pop(name, None)
                else:
                    table[name] = value
                return

    def instances_of(self, model_id: str) -> list[dict[str, Any]]:
        return [i for i in self.instances.values() if i.get("model_id") == model_id]

    def instances_on(self, node_id: str) -> list[dict[str, Any]]:
        return [i for i in self.instances.values() if i.get("node_id") == node_id]

    def nodes_in_use(self) -> set[str]:
        """Nodes hosting at least one instance (what consolidation tries to keep small)."""
        return {str(i.get("node_id")) for i in self.instances.values() if i.get("node_id")}


class ClusterWatcher:
    """Keeps a ClusterView in sync with etcd; `changed` fires after every applied event."""

    def __init__(self, store: Store):
        self.store = store
        self.view = ClusterView()
        self.changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()

    async def start(self) -> None:
        await self._relist()
        self._task = asyncio.create_task(self._run(), name="cluster-watch")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _relist(self) -> None:
        entries, revision = await self.store.list(keys.ROOT)
        view = ClusterView(revision=revision)
        for e in entries:
            view.apply(e.key, e.value)
        self.view = view
        self._synced.set()
        await self._notify()
        logger.info(
            "cluster view at rev {}: {} nodes, {} models, {} instances",
            revision,
            len(view.nodes),
            len(view.models),
            len(view.instances),
        )

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def _run(self) -> None:
        while True:
            try:
                async for ev in self.store.watch(keys.ROOT, self.view.revision + 1):
                    self.view.apply(ev.key, ev.value)
                    self.view.revision = max(self.view.revision, ev.mod_revision)
                    await self._notify()
                raise RuntimeError("watch ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("cluster watch interrupted ({}); listing again", exc)
                await asyncio.sleep(0.5)
                with contextlib.suppress(Exception):
                    await self._relist()

    async def wait_for(self, predicate: Any, timeout_s: float) -> bool:
        """Wait until predicate(view) is true or the timeout passes."""

        async def _wait() -> None:
            async with self.changed:
                await self.changed.wait_for(lambda: predicate(self.view))

        try:
            await asyncio.wait_for(_wait(), timeout_s)
            return True
        except TimeoutError:
            return False
