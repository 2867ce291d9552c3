"""Channels to workers, one per address, reused across requests (with the cluster's token
and TLS, security.py)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2_grpc

from slinfer.services.common.security import channel
from slinfer.v1 import worker_pb2_grpc

# No client keepalive pings: servers answer pings more frequent than their 5-minute default
# with GOAWAY "too many pings", which would break long LoadInstance calls. A dead worker is
# noticed by the stream it breaks (cluster/suspects.py), and by its etcd lease.
_OPTIONS: list[tuple[str, int]] = []


class WorkerClients:
    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, worker_pb2_grpc.WorkerStub] = {}

    def _channel(self, address: str) -> grpc.aio.Channel:
        ch = self._channels.get(address)
        if ch is None:
            ch = self._channels[address] = channel(address, options=_OPTIONS)
        return ch

    def stub(self, address: str) -> worker_pb2_grpc.WorkerStub:
        stub = self._stubs.get(address)
        if stub is None:
            stub = self._stubs[address] = worker_pb2_grpc.WorkerStub(self._channel(address))
        return stub

    def health(self, address: str) -> health_pb2_grpc.HealthStub:
        return health_pb2_grpc.HealthStub(self._channel(address))

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()
        self._channels.clear()
        self._stubs.clear()
