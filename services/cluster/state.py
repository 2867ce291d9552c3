"""The scheduler's view of the cluster: nodes, models and instances, listed then watched.

Level-triggered like a Kubernetes informer: list everything under /slinfer/ at revision R,
watch from R + 1, and on any watch failure list again. The view is rebuilt from scratch on
start, which is what makes a restarted scheduler whole again.

Nodes, instances and models are parsed here, at the watch edge, into the typed records of
services/common/records.py; a value that does not parse is logged and left out of the view
(never an exception in the watch loop). The other tables keep their JSON documents.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, TypeVar

from loguru import logger

from slinfer.services.common import keys
from slinfer.services.common.records import (
    InstanceRecord,
    InstanceState,
    ModelRecord,
    NodeRecord,
    read_record,
)
from slinfer.services.common.store import Store

R = TypeVar("R", NodeRecord, InstanceRecord, ModelRecord)


def _apply_record(
    table: dict[str, R], cls: type[R], prefix: str, key: str, value: Any, rev: int | None
) -> None:
    name = keys.tail(key, prefix)
    record = read_record(cls, key, value, rev) if value is not None else None
    if record is None:  # deleted, or a value nobody can read: what it said before is gone too
        table.pop(name, None)
    else:
        table[name] = record


@dataclass
class ClusterView:
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    models: dict[str, ModelRecord] = field(default_factory=dict)
    instances: dict[str, InstanceRecord] = field(default_factory=dict)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    # model -> hardware label -> measured tables (profiles format)
    profiles: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # instance -> scheduler id -> token-budget lease; node -> drain mark; service kind ->
    # elected leader
    leases: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    drains: dict[str, dict[str, Any]] = field(default_factory=dict)
    leaders: dict[str, dict[str, Any]] = field(default_factory=dict)
    # node -> the memory service's ledger document (services/memory/state.py)
    ledgers: dict[str, dict[str, Any]] = field(default_factory=dict)
    # model -> its shared tally of completed output lengths (Ō; scheduler/outputs.py)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # API keys and tenants (services/common/auth.py): key id -> hashed key, tenant -> limits
    api_keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    tenants: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Not from etcd: nodes this process saw break a stream (cluster/suspects.py), left out of
    # placement and routing like draining ones until they answer again or their record goes.
    suspects: dict[str, str] = field(default_factory=dict)
    revision: int = 0

    def apply(
        self, key: str, value: dict[str, Any] | None, mod_revision: int | None = None
    ) -> None:
        """Show one etcd key's value (None: deleted), read at `mod_revision` if known."""
        if key.startswith(keys.NODES):
            _apply_record(self.nodes, NodeRecord, keys.NODES, key, value, mod_revision)
            return
        if key.startswith(keys.INSTANCES):
            _apply_record(self.instances, InstanceRecord, keys.INSTANCES, key, value, mod_revision)
            return
        if key.startswith(keys.MODELS):
            _apply_record(self.models, ModelRecord, keys.MODELS, key, value, mod_revision)
            return
        if key.startswith(keys.PROFILES):
            model_id, _, label = keys.tail(key, keys.PROFILES).partition("/")
            if value is None:
                self.profiles.get(model_id, {}).pop(label, None)
            else:
                self.profiles.setdefault(model_id, {})[label] = value
            return
        if key.startswith(keys.LEASES):
            # /leases/{node}/{instance}/{scheduler}: one per scheduler replica
            _, _, rest = keys.tail(key, keys.LEASES).partition("/")
            iid, _, scheduler = rest.partition("/")
            if value is None:
                owners = self.leases.get(iid, {})
                owners.pop(scheduler, None)
                if not owners:
                    self.leases.pop(iid, None)
            else:
                self.leases.setdefault(iid, {})[scheduler] = value
            return
        for prefix, table in (
            (keys.DRAIN, self.drains),
            (keys.ELECTION, self.leaders),
            (keys.SERVICES, self.services),
            (keys.MEMORY, self.ledgers),
            (keys.OUTPUTS, self.outputs),
            (keys.API_KEYS, self.api_keys),
            (keys.TENANTS, self.tenants),
        ):
            if key.startswith(prefix):
                name = keys.tail(key, prefix)
                if value is None:
                    table.pop(name, None)
                else:
                    table[name] = value
                return

    def profiles_of(self, model_id: str) -> dict[str, dict[str, Any]]:
        """The measured tables (hardware label -> tables) that describe a model: its own, else
        those of another deployed model with the same files, engine and weight format (the
        tables measure the files on a device, not the id; DESIGN.md §2). So a model deployed
        under a second id is placed by admission from its first request, not by memory alone."""
        own = self.profiles.get(model_id)
        model = self.models.get(model_id)
        if own or model is None:
            return own or {}
        same = (model.path, model.engine, model.weights)
        for other_id, tables in sorted(self.profiles.items()):
            other = self.models.get(other_id)
            if tables and other is not None and (other.path, other.engine, other.weights) == same:
                return tables
        return {}

    def instances_of(self, model_id: str) -> list[InstanceRecord]:
        return [i for i in self.instances.values() if i.model_id == model_id]

    def instances_on(self, node_id: str) -> list[InstanceRecord]:
        return [i for i in self.instances.values() if i.node_id == node_id]

    def state_of(self, instance_id: str) -> InstanceState | None:
        """The instance's state; None when the view holds no (readable) record of it."""
        rec = self.instances.get(instance_id)
        return rec.state if rec is not None else None

    def waiting_requests(self) -> int:
        """Requests the schedulers hold waiting for capacity (their registrations say)."""
        return sum(
            int(s.get("waiting", 0)) for name, s in self.services.items()
            if name.startswith("scheduler/")
        )  # fmt: skip

    def lease_requests(self, instance_id: str, but: str = "") -> dict[str, dict[str, Any]]:
        """Request id -> lease entry of every request on the instance, as the schedulers'
        leases list them (all but scheduler `but`'s)."""
        out: dict[str, dict[str, Any]] = {}
        for scheduler, lease in self.leases.get(instance_id, {}).items():
            if scheduler != but:
                out.update(lease.get("requests") or {})
        return out

    def unavailable(self, node_id: str) -> bool:
        """Draining, or suspected dead by this process: nothing new goes there."""
        return node_id in self.drains or node_id in self.suspects

    def nodes_in_use(self) -> set[str]:
        """Nodes hosting at least one instance (what consolidation tries to keep small)."""
        return {i.node_id for i in self.instances.values() if i.node_id}


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
        view = ClusterView(revision=revision, suspects=self.view.suspects)
        for e in entries:
            view.apply(e.key, e.value, e.mod_revision)
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
                    self.view.apply(ev.key, ev.value, ev.mod_revision)
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

    def view_apply(self, key: str, value: dict[str, Any] | None) -> None:
        """Read-your-writes: show a value this process just wrote before its watch event."""
        self.view.apply(key, value)

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
