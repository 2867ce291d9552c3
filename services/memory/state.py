"""The memory service's etcd state: one document per node under `memory/{node}`.

The document holds the node's `Ledger` (ledger.py), the *action queue* (approvals the worker
has not yet reported complete) and the bytes the worker measured at its last completions.
Every change is read-modify-write in one etcd transaction guarded on the key's mod revision
(create guarded on absence), retried when another writer got there first, so racing requests
and several memory-service replicas can never oversubscribe a node (STYLE.md "boundaries").

A document written for an earlier incarnation of the node's worker (its `started_at` differs)
is discarded: a restarted worker holds nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from loguru import logger

from slinfer.policy.ledger import Approval, Ledger
from slinfer.services.common import keys
from slinfer.services.common.errors import NodeNotFound, StoreUnavailable
from slinfer.services.common.records import NodeRecord, read_record
from slinfer.services.common.store import Store
from slinfer.services.memory import metrics

T = TypeVar("T")

MAX_ATTEMPTS = 64


def approval_dict(a: Approval) -> dict[str, Any]:
    return {
        "instance_id": a.instance_id,
        "revision": a.revision,
        "weights_bytes": a.footprint.weights_bytes,
        "kv_bytes": a.footprint.kv_bytes,
    }


@dataclass
class NodeBook:
    """Everything the memory service keeps for one node."""

    node_id: str
    ledger: Ledger
    node_started_at: float
    actions: list[dict[str, Any]] = field(default_factory=list)
    reported: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def from_value(
        cls, node_id: str, value: dict[str, Any], capacity_bytes: int, started_at: float
    ) -> NodeBook:
        if not value or value.get("node_started_at") != started_at:
            return cls(node_id, Ledger(node_id, capacity_bytes), started_at)
        return cls(
            node_id,
            Ledger.from_dict(node_id, value.get("ledger", {}), capacity_bytes),
            started_at,
            list(value.get("actions", [])),
            dict(value.get("reported", {})),
        )

    def queue(self, approvals: tuple[Approval, ...]) -> None:
        self.actions.extend(approval_dict(a) for a in approvals)

    def completed(self, instance_id: str, revision: int) -> None:
        self.actions = [
            a for a in self.actions if a["instance_id"] != instance_id or a["revision"] > revision
        ]

    @property
    def reported_bytes(self) -> int:
        return sum(r["weights_bytes"] + r["kv_bytes"] for r in self.reported.values())

    def to_value(self) -> dict[str, Any]:
        """The document, with a summary readers use without rebuilding the ledger."""
        ledger = self.ledger
        deferred = set(ledger.deferred())
        instances = {}
        for iid in ledger.instance_ids():
            planned, actual = ledger.planned(iid), ledger.actual(iid)
            rep = self.reported.get(iid, {})
            instances[iid] = {
                "revision": ledger.revision(iid),
                "planned_weights_bytes": planned.weights_bytes,
                "planned_kv_bytes": planned.kv_bytes,
                "actual_weights_bytes": actual.weights_bytes,
                "actual_kv_bytes": actual.kv_bytes,
                "reported_bytes": rep.get("weights_bytes", 0) + rep.get("kv_bytes", 0),
                "deferred": iid in deferred,
            }
        return {
            "node_id": self.node_id,
            "node_started_at": self.node_started_at,
            "capacity_bytes": ledger.capacity_bytes,
            "planned_bytes": ledger.planned_bytes,
            "actual_bytes": ledger.actual_bytes,
            "reported_bytes": self.reported_bytes,
            "instances": instances,
            "actions": self.actions,
            "deferred": list(ledger.deferred()),
            "reported": self.reported,
            "ledger": ledger.to_dict(),
        }


def record_ledger(book: NodeBook) -> None:
    ledger = book.ledger
    for kind, value in (
        ("planned", ledger.planned_bytes),
        ("actual", ledger.actual_bytes),
        ("reported", book.reported_bytes),
        ("capacity", ledger.capacity_bytes),
    ):
        metrics.LEDGER_BYTES.labels(book.node_id, kind).set(value)


class LedgerStore:
    def __init__(self, store: Store):
        self.store = store

    async def _load(self, node_id: str) -> tuple[NodeBook, int | None]:
        e = await self.store.get(keys.node(node_id))
        node = read_record(NodeRecord, e.key, e.value, e.mod_revision) if e is not None else None
        if node is None:
            raise NodeNotFound(
                f"node {node_id} is not registered (no worker holds a readable "
                f"nodes/{node_id}); start its worker first"
            )
        entry = await self.store.get(keys.memory(node_id))
        value = entry.value if entry is not None else {}
        book = NodeBook.from_value(node_id, value, node.memory_bytes, node.started_at)
        return book, (entry.mod_revision if entry is not None else None)

    async def read(self, node_id: str) -> NodeBook:
        book, _ = await self._load(node_id)
        return book

    async def transact(self, node_id: str, change: Callable[[NodeBook], T]) -> T:
        """Apply `change` to the node's book and write it back atomically (retry on a lost
        race: `change` runs again on the fresh book, so it must only touch the book)."""
        key = keys.memory(node_id)
        for attempt in range(MAX_ATTEMPTS):
            book, mod_revision = await self._load(node_id)
            result = change(book)
            value = book.to_value()
            if mod_revision is None:
                ok = await self.store.create(key, value)
            else:
                ok = await self.store.update(key, value, mod_revision)
            if ok:
                record_ledger(book)
                return result
            logger.debug("ledger of node={} changed under us (attempt {})", node_id, attempt + 1)
        raise StoreUnavailable(
            f"the ledger of node {node_id} changed {MAX_ATTEMPTS} times during one update; "
            "etcd is overloaded, retry"
        )
