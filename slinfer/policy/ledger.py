"""The memory service's per-node ledger (DESIGN.md §3, "Coordination").

A pure state machine of *planned* and *actual* footprints (weights + KV) per instance, with
per-instance revisions and a FIFO of deferred increases. No etcd, no clock: the live memory
service persists it with etcd transactions; the simulator keeps it in memory. Statuses follow
kvcached's: applied, deferred, rejected, stale, conflict.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class LedgerError(Exception):
    """Misuse of the ledger (e.g. forgetting an instance that still holds memory)."""


class LedgerOp(enum.Enum):
    LOAD = "load"  # weights become resident
    OFFLOAD = "offload"  # weights leave
    KV_RESIZE = "kv_resize"  # KV pool to a new size (up or down)
    EVICT = "evict"  # weights and KV leave


class LedgerStatus(enum.Enum):
    APPLIED = "applied"  # approved now; the worker may carry it out
    DEFERRED = "deferred"  # an increase waiting for a neighbour's release to complete
    REJECTED = "rejected"  # the plan itself would exceed the node
    STALE = "stale"  # based on an older revision of the instance
    CONFLICT = "conflict"  # based on a revision the ledger has not issued


@dataclass(frozen=True, slots=True)
class Footprint:
    weights_bytes: int = 0
    kv_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes

    def join(self, other: Footprint) -> Footprint:
        return Footprint(
            max(self.weights_bytes, other.weights_bytes), max(self.kv_bytes, other.kv_bytes)
        )


ZERO = Footprint()


@dataclass(frozen=True, slots=True)
class LedgerRequest:
    """A footprint change; `revision` is the instance revision the caller last saw."""

    request_id: str
    instance_id: str
    op: LedgerOp
    revision: int
    weights_bytes: int = 0
    kv_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Approval:
    """The worker may now bring the instance to this footprint (then call `complete`)."""

    instance_id: str
    revision: int
    footprint: Footprint


@dataclass(frozen=True, slots=True)
class LedgerOutcome:
    status: LedgerStatus
    request_id: str
    instance_id: str
    revision: int
    approvals: tuple[Approval, ...] = ()


@dataclass(slots=True)
class _Step:
    revision: int
    footprint: Footprint
    committed: bool


@dataclass(slots=True)
class _Entry:
    base: Footprint = ZERO  # footprint after the last completed action
    steps: list[_Step] = field(default_factory=list)  # issued, not yet completed, in order
    revision: int = 0
    last_request_id: str | None = None

    @property
    def planned(self) -> Footprint:
        return self.steps[-1].footprint if self.steps else self.base

    @property
    def actual(self) -> Footprint:
        result = self.base
        for step in self.steps:
            if step.committed:
                result = result.join(step.footprint)
        return result


class Ledger:
    """Per-node planned/actual footprints and the action queue (DESIGN.md §3, "Coordination").

    Invariants: planned total ≤ capacity (a plan that does not fit is REJECTED) and actual
    total ≤ capacity (an increase commits only when actual + increase fits; otherwise it is
    DEFERRED until a release *completes*). Decreases are approved at once but count as actual
    until the worker reports them done through `complete`.
    """

    __slots__ = ("node_id", "capacity_bytes", "_entries", "_queue", "_planned", "_actual")

    def __init__(self, node_id: str, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be >= 0, got {capacity_bytes}")
        self.node_id = node_id
        self.capacity_bytes = capacity_bytes
        self._entries: dict[str, _Entry] = {}
        self._queue: list[str] = []
        self._planned = 0  # Σ entry.planned.total_bytes, kept current by _out/_in
        self._actual = 0  # Σ entry.actual.total_bytes

    # -- views -------------------------------------------------------------------------------
    @property
    def planned_bytes(self) -> int:
        return self._planned

    @property
    def actual_bytes(self) -> int:
        return self._actual

    def revision(self, instance_id: str) -> int:
        entry = self._entries.get(instance_id)
        return 0 if entry is None else entry.revision

    def planned(self, instance_id: str) -> Footprint:
        entry = self._entries.get(instance_id)
        return ZERO if entry is None else entry.planned

    def actual(self, instance_id: str) -> Footprint:
        entry = self._entries.get(instance_id)
        return ZERO if entry is None else entry.actual

    def deferred(self) -> tuple[str, ...]:
        return tuple(self._queue)

    def release_in_flight(self) -> bool:
        """True while some approved decrease has not completed (a deferral may still clear)."""
        return any(e.actual.total_bytes > e.planned.total_bytes for e in self._entries.values())

    # -- operations --------------------------------------------------------------------------
    def submit(self, req: LedgerRequest) -> LedgerOutcome:
        entry = self._entries.get(req.instance_id)
        if entry is None:
            if req.revision != 0:
                return self._outcome(LedgerStatus.CONFLICT, req, req.revision)
            entry = _Entry()
        if req.request_id == entry.last_request_id:
            return self._outcome(self._status_of(entry, entry.revision), req, entry.revision)
        if req.revision < entry.revision:
            return self._outcome(LedgerStatus.STALE, req, entry.revision)
        if req.revision > entry.revision:
            return self._outcome(LedgerStatus.CONFLICT, req, entry.revision)
        target = _target(entry.planned, req)
        if self._planned - entry.planned.total_bytes + target.total_bytes > self.capacity_bytes:
            return self._outcome(LedgerStatus.REJECTED, req, entry.revision)
        self._entries[req.instance_id] = entry
        self._out(entry)
        if entry.steps and not entry.steps[-1].committed:
            entry.steps.pop()  # the superseded deferred increase is stale
            self._queue.remove(req.instance_id)
        entry.revision += 1
        entry.last_request_id = req.request_id
        step = _Step(entry.revision, target, committed=False)
        entry.steps.append(step)
        self._in(entry)
        if self._try_commit(entry, step):
            approval = Approval(req.instance_id, step.revision, target)
            return self._outcome(LedgerStatus.APPLIED, req, entry.revision, (approval,))
        self._queue.append(req.instance_id)
        return self._outcome(LedgerStatus.DEFERRED, req, entry.revision)

    def complete(self, instance_id: str, revision: int) -> tuple[Approval, ...]:
        """The worker has carried out every approved action up to `revision`.

        Returns the deferred increases this release lets through, in queue order.
        """
        entry = self._entries.get(instance_id)
        if entry is None:
            return ()
        done = [s for s in entry.steps if s.revision <= revision and s.committed]
        if not done:
            return ()
        last = done[-1]
        self._out(entry)
        entry.base = last.footprint
        entry.steps = [s for s in entry.steps if s.revision > last.revision]
        self._in(entry)
        return self._drain()

    def forget(self, instance_id: str) -> None:
        entry = self._entries.get(instance_id)
        if entry is None:
            return
        if entry.planned != ZERO or entry.actual != ZERO:
            raise LedgerError(f"{instance_id} still holds memory on {self.node_id}")
        if instance_id in self._queue:
            self._queue.remove(instance_id)
        del self._entries[instance_id]

    # -- persistence (the live service keeps the ledger in etcd as JSON) -----------------------
    def instance_ids(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def to_dict(self) -> dict[str, Any]:
        entries = {
            iid: {
                "base": [e.base.weights_bytes, e.base.kv_bytes],
                "steps": [
                    [s.revision, s.footprint.weights_bytes, s.footprint.kv_bytes, s.committed]
                    for s in e.steps
                ],
                "revision": e.revision,
                "last_request_id": e.last_request_id,
            }
            for iid, e in self._entries.items()
        }
        return {"capacity_bytes": self.capacity_bytes, "entries": entries, "queue": self._queue}

    @classmethod
    def from_dict(cls, node_id: str, data: dict[str, Any], capacity_bytes: int) -> Ledger:
        """Rebuild a ledger; `capacity_bytes` is the node's current capacity."""
        ledger = cls(node_id, capacity_bytes)
        for iid, raw in data.get("entries", {}).items():
            entry = _Entry(
                base=Footprint(*raw["base"]),
                steps=[_Step(r, Footprint(w, k), bool(c)) for r, w, k, c in raw["steps"]],
                revision=int(raw["revision"]),
                last_request_id=raw.get("last_request_id"),
            )
            ledger._entries[iid] = entry
            ledger._in(entry)
        ledger._queue = [iid for iid in data.get("queue", []) if iid in ledger._entries]
        return ledger

    # -- internals ---------------------------------------------------------------------------
    def _out(self, entry: _Entry) -> None:
        self._planned -= entry.planned.total_bytes
        self._actual -= entry.actual.total_bytes

    def _in(self, entry: _Entry) -> None:
        self._planned += entry.planned.total_bytes
        self._actual += entry.actual.total_bytes

    def _try_commit(self, entry: _Entry, step: _Step) -> bool:
        before = entry.actual
        after = before.join(step.footprint)
        if self._actual - before.total_bytes + after.total_bytes > self.capacity_bytes:
            return False
        step.committed = True
        self._actual += after.total_bytes - before.total_bytes
        return True

    def _drain(self) -> tuple[Approval, ...]:
        approvals: list[Approval] = []
        while self._queue:
            instance_id = self._queue[0]
            entry = self._entries[instance_id]
            step = entry.steps[-1]
            if not self._try_commit(entry, step):
                break  # head-of-line: increases are approved in the order they were asked
            self._queue.pop(0)
            approvals.append(Approval(instance_id, step.revision, step.footprint))
        return tuple(approvals)

    def _status_of(self, entry: _Entry, revision: int) -> LedgerStatus:
        for step in entry.steps:
            if step.revision == revision:
                return LedgerStatus.APPLIED if step.committed else LedgerStatus.DEFERRED
        return LedgerStatus.APPLIED

    @staticmethod
    def _outcome(
        status: LedgerStatus,
        req: LedgerRequest,
        revision: int,
        approvals: tuple[Approval, ...] = (),
    ) -> LedgerOutcome:
        return LedgerOutcome(status, req.request_id, req.instance_id, revision, approvals)


def _target(current: Footprint, req: LedgerRequest) -> Footprint:
    if req.op is LedgerOp.LOAD:
        return Footprint(req.weights_bytes, current.kv_bytes)
    if req.op is LedgerOp.OFFLOAD:
        return Footprint(0, current.kv_bytes)
    if req.op is LedgerOp.KV_RESIZE:
        return Footprint(current.weights_bytes, req.kv_bytes)
    return ZERO
