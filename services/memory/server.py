"""The memory service: serves `slinfer.v1.Memory` over the per-node ledgers in etcd.

Each RPC is one ledger transaction (state.py) carrying out the pure `Ledger` (ledger.py), the
same state machine the simulator drives. Stale and conflicting revisions become
FAILED_PRECONDITION / ABORTED with a message naming the revision the ledger is at; everything
else (applied, deferred, rejected) is an answer in `LedgerResponse.status`. Stateless apart
from etcd, so any number of replicas may serve at once.
"""

from __future__ import annotations

from typing import Any

import grpc
from loguru import logger

from slinfer.policy.ledger import LedgerOp, LedgerOutcome, LedgerRequest, LedgerStatus
from slinfer.services.common.errors import (
    InvalidArgument,
    RevisionConflict,
    StaleRevision,
    status_of,
)
from slinfer.services.common.presence import PresenceService
from slinfer.services.common.security import Security
from slinfer.services.memory import metrics
from slinfer.services.memory.state import LedgerStore, NodeBook, approval_dict
from slinfer.v1 import memory_pb2, memory_pb2_grpc

SERVICE_NAME = "slinfer.v1.Memory"

_STATUS_TO_PB = {
    LedgerStatus.APPLIED: memory_pb2.LEDGER_STATUS_APPLIED,
    LedgerStatus.DEFERRED: memory_pb2.LEDGER_STATUS_DEFERRED,
    LedgerStatus.REJECTED: memory_pb2.LEDGER_STATUS_REJECTED,
}


def _approval_pb(a: dict[str, Any]) -> memory_pb2.Approval:
    return memory_pb2.Approval(
        instance_id=str(a["instance_id"]),
        revision=int(a["revision"]),
        weights_bytes=int(a["weights_bytes"]),
        kv_bytes=int(a["kv_bytes"]),
    )


class MemoryServicer(memory_pb2_grpc.MemoryServicer):
    def __init__(self, ledgers: LedgerStore):
        self.ledgers = ledgers

    async def ScaleKV(self, request, context):  # noqa: N802
        return await self._change(context, request.change, LedgerOp.KV_RESIZE, 0, request.kv_bytes)

    async def LoadWeights(self, request, context):  # noqa: N802
        return await self._change(context, request.change, LedgerOp.LOAD, request.weights_bytes, 0)

    async def OffloadWeights(self, request, context):  # noqa: N802
        return await self._change(context, request, LedgerOp.OFFLOAD, 0, 0)

    async def Evict(self, request, context):  # noqa: N802
        return await self._change(context, request, LedgerOp.EVICT, 0, 0)

    async def _change(self, context, change, op: LedgerOp, weights: int, kv: int):
        try:
            if not change.node_id or not change.instance_id or not change.request_id:
                raise InvalidArgument("node_id, instance_id and request_id are required")
            if weights < 0 or kv < 0 or change.revision < 0:
                raise InvalidArgument("byte counts and revision must be >= 0")
            req = LedgerRequest(
                change.request_id, change.instance_id, op, change.revision, weights, kv
            )

            def submit(book: NodeBook) -> tuple[LedgerOutcome, int, int]:
                outcome = book.ledger.submit(req)
                book.queue(outcome.approvals)
                return outcome, book.ledger.planned_bytes, book.ledger.capacity_bytes

            outcome, planned, capacity = await self.ledgers.transact(change.node_id, submit)
            metrics.LEDGER_CHANGES.labels(op.value, outcome.status.value).inc()
            _raise_refusal(outcome, change.node_id, change.revision)
            message = ""
            if outcome.status is LedgerStatus.REJECTED:
                message = (
                    f"{op.value} of {change.instance_id} would plan more than node "
                    f"{change.node_id}'s {capacity} bytes (planned now {planned})"
                )
            elif outcome.status is LedgerStatus.DEFERRED:
                message = "waits until a neighbour's release completes on the node"
            logger.info(
                "ledger node={} instance={} op={} status={} rev={} planned={}",
                change.node_id,
                change.instance_id,
                op.value,
                outcome.status.value,
                outcome.revision,
                planned,
            )
            return memory_pb2.LedgerResponse(
                status=_STATUS_TO_PB[outcome.status],
                revision=outcome.revision,
                approvals=[
                    memory_pb2.Approval(
                        instance_id=a.instance_id,
                        revision=a.revision,
                        weights_bytes=a.footprint.weights_bytes,
                        kv_bytes=a.footprint.kv_bytes,
                    )
                    for a in outcome.approvals
                ],
                message=message,
                node_planned_bytes=planned,
                node_capacity_bytes=capacity,
            )
        except Exception as exc:
            await _abort(context, exc)

    async def ReportCompletion(self, request, context):  # noqa: N802
        try:
            if not request.node_id or not request.instance_id:
                raise InvalidArgument("node_id and instance_id are required")

            def complete(book: NodeBook) -> list[dict[str, Any]]:
                iid = request.instance_id
                approvals = book.ledger.complete(iid, request.revision)
                book.completed(iid, request.revision)
                book.queue(approvals)
                book.reported[iid] = {
                    "weights_bytes": request.weights_bytes_allocated,
                    "kv_bytes": request.kv_bytes_allocated,
                }
                if book.ledger.planned(iid).total_bytes == 0 and (
                    book.ledger.actual(iid).total_bytes == 0
                ):
                    book.ledger.forget(iid)
                    book.reported.pop(iid, None)
                return [approval_dict(a) for a in approvals]

            released = await self.ledgers.transact(request.node_id, complete)
            return memory_pb2.CompletionResponse(released=[_approval_pb(a) for a in released])
        except Exception as exc:
            await _abort(context, exc)

    async def GetLedger(self, request, context):  # noqa: N802
        try:
            if not request.node_id:
                raise InvalidArgument("node_id is required")
            value = (await self.ledgers.read(request.node_id)).to_value()
            return node_ledger_pb(value)
        except Exception as exc:
            await _abort(context, exc)


def node_ledger_pb(value: dict[str, Any]) -> memory_pb2.NodeLedger:
    return memory_pb2.NodeLedger(
        node_id=value["node_id"],
        capacity_bytes=value["capacity_bytes"],
        planned_bytes=value["planned_bytes"],
        actual_bytes=value["actual_bytes"],
        reported_bytes=value["reported_bytes"],
        instances=[
            memory_pb2.InstanceLedger(instance_id=iid, **fields)
            for iid, fields in sorted(value["instances"].items())
        ],
        actions=[_approval_pb(a) for a in value["actions"]],
        deferred=value["deferred"],
    )


def _raise_refusal(outcome: LedgerOutcome, node_id: str, sent: int) -> None:
    iid, at = outcome.instance_id, outcome.revision
    if outcome.status is LedgerStatus.STALE:
        raise StaleRevision(
            f"stale revision {sent} for instance {iid} on node {node_id}: the ledger is at "
            f"revision {at}; read it again (GetLedger) and resend based on revision {at}"
        )
    if outcome.status is LedgerStatus.CONFLICT:
        raise RevisionConflict(
            f"conflicting revision {sent} for instance {iid} on node {node_id}: the ledger "
            f"never issued it (it is at revision {at}); resend based on revision {at}"
        )


async def _abort(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    code, message = status_of(exc)
    if code == grpc.StatusCode.INTERNAL:
        logger.exception("memory call failed: {}", exc)
    await context.abort(code, message)


class MemoryService(PresenceService):
    """Registered under services/memory/{id}; serves Memory, health and reflection."""

    def __init__(self, etcd: str, listen: str = "127.0.0.1:0", security: Security | None = None):
        super().__init__("memory", etcd, listen, service_names=[SERVICE_NAME], security=security)
        servicer = MemoryServicer(LedgerStore(self.store))
        self._servicers.append(lambda s: memory_pb2_grpc.add_MemoryServicer_to_server(servicer, s))


def create(
    etcd: str, listen: str = "127.0.0.1:0", security: Security | None = None
) -> MemoryService:
    return MemoryService(etcd, listen, security)
