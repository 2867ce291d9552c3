"""Channels to workers, one per address, reused across requests."""

from __future__ import annotations

import grpc

from slinfer.v1 import worker_pb2_grpc

# No client keepalive pings: servers answer pings more frequent than their 5-minute default
# with GOAWAY "too many pings", which would break long LoadInstance calls. Dead workers are
# noticed through their etcd lease instead.
_OPTIONS: list[tuple[str, int]] = []


class WorkerClients:
    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, worker_pb2_grpc.WorkerStub] = {}

    def stub(self, address: str) -> worker_pb2_grpc.WorkerStub:
        stub = self._stubs.get(address)
        if stub is None:
            channel = grpc.aio.insecure_channel(address, options=_OPTIONS)
            self._channels[address] = channel
            stub = self._stubs[address] = worker_pb2_grpc.WorkerStub(channel)
        return stub

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._stubs.clear()
