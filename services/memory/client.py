"""A client of `slinfer.v1.Memory` for the worker and the scheduler.

The service is found in etcd (`services/memory/{id}`); when none is registered, `available()`
is False and callers behave as before the memory service existed (docs/MEMORY.md). Calls have
deadlines; a call that failed in transit is retried with the *same* request id (idempotent).
With `revision=None` the client reads the instance's current revision first and, when another
caller moved it meanwhile (stale), reads it again: the latest-wins path for the worker's own
load/evict bookkeeping. The scheduler passes the revision it decided on and takes the refusal.
"""

from __future__ import annotations

import uuid

import grpc

from slinfer.policy.ledger import LedgerOp
from slinfer.services.common import keys
from slinfer.services.common.security import channel
from slinfer.services.common.store import Store
from slinfer.v1 import memory_pb2, memory_pb2_grpc

_REFRESH = (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED)


class MemoryClient:
    def __init__(self, store: Store, timeout_s: float = 10.0):
        self.store = store
        self.timeout_s = timeout_s
        self._address = ""
        self._channel: grpc.aio.Channel | None = None
        self._stub: memory_pb2_grpc.MemoryStub | None = None

    async def available(self) -> bool:
        return await self._get_stub() is not None

    async def _get_stub(self) -> memory_pb2_grpc.MemoryStub | None:
        if self._stub is not None:
            return self._stub
        entries, _ = await self.store.list(keys.SERVICES + "memory/")
        for e in entries:
            address = str(e.value.get("address", ""))
            if address:
                self._address = address
                self._channel = channel(address)
                self._stub = memory_pb2_grpc.MemoryStub(self._channel)
                return self._stub
        return None

    async def _forget(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel, self._stub, self._address = None, None, ""

    async def _call(self, method: str, request):  # noqa: ANN001, ANN202
        """One RPC; on UNAVAILABLE re-discover the service and resend the same request once."""
        for attempt in range(2):
            stub = await self._get_stub()
            if stub is None:
                raise grpc.aio.AioRpcError(  # same shape as a transport failure
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.aio.Metadata(),
                    grpc.aio.Metadata(),
                    details="no memory service is registered in etcd",
                )
            try:
                return await getattr(stub, method)(request, timeout=self.timeout_s)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt == 1:
                    raise
                await self._forget()
        raise AssertionError("unreachable")

    async def ledger(self, node_id: str) -> memory_pb2.NodeLedger:
        return await self._call("GetLedger", memory_pb2.GetLedgerRequest(node_id=node_id))

    async def revision(self, node_id: str, instance_id: str) -> int:
        book = await self.ledger(node_id)
        return next((i.revision for i in book.instances if i.instance_id == instance_id), 0)

    async def change(
        self,
        node_id: str,
        instance_id: str,
        op: LedgerOp,
        *,
        weights_bytes: int = 0,
        kv_bytes: int = 0,
        revision: int | None = None,
    ) -> memory_pb2.LedgerResponse:
        latest = revision is None
        for attempt in range(8):
            rev = await self.revision(node_id, instance_id) if latest else revision
            assert rev is not None
            change = memory_pb2.InstanceChange(
                node_id=node_id,
                instance_id=instance_id,
                request_id=f"{instance_id}:{op.value}:{rev}:{uuid.uuid4().hex[:8]}",
                revision=rev,
            )
            try:
                if op is LedgerOp.KV_RESIZE:
                    req = memory_pb2.ScaleKVRequest(change=change, kv_bytes=kv_bytes)
                    return await self._call("ScaleKV", req)
                if op is LedgerOp.LOAD:
                    req = memory_pb2.LoadWeightsRequest(change=change, weights_bytes=weights_bytes)
                    return await self._call("LoadWeights", req)
                method = "OffloadWeights" if op is LedgerOp.OFFLOAD else "Evict"
                return await self._call(method, change)
            except grpc.aio.AioRpcError as exc:
                if not latest or exc.code() not in _REFRESH or attempt == 7:
                    raise
        raise AssertionError("unreachable")

    async def complete(
        self, node_id: str, instance_id: str, revision: int, weights_bytes: int, kv_bytes: int
    ) -> memory_pb2.CompletionResponse:
        return await self._call(
            "ReportCompletion",
            memory_pb2.CompletionReport(
                node_id=node_id,
                instance_id=instance_id,
                revision=revision,
                weights_bytes_allocated=weights_bytes,
                kv_bytes_allocated=kv_bytes,
            ),
        )

    async def close(self) -> None:
        await self._forget()
