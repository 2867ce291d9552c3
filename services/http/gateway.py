"""The HTTP front's gRPC side: one channel to the gateway(s), calls with the caller's key.

The `authorization` header travels unchanged as gRPC metadata, so when the gateway checks
API keys (`Authorization: Bearer ...`) the HTTP API is checked by the same rule.
Generate calls carry no deadline of their own: the gateway bounds each request by its TTFT
deadline (a cold start is held, not refused), and the HTTP front must not cut it shorter.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from slinfer.v1 import gateway_pb2, gateway_pb2_grpc

FORWARDED_HEADERS = ("authorization",)
_OPTIONS = [
    # Several scheduler replicas behind one DNS name (a headless Service): spread the calls.
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.max_receive_message_length", 64 << 20),
]


class GatewayClient:
    def __init__(self, target: str, rpc_timeout_s: float = 10.0, tls_ca: str = ""):
        self.target = target
        self.rpc_timeout_s = rpc_timeout_s
        # The caller's key is the credential (no cluster token): TLS when the gateway serves it.
        self.channel = (
            grpc.aio.secure_channel(
                target, grpc.ssl_channel_credentials(Path(tls_ca).read_bytes()), options=_OPTIONS
            )
            if tls_ca
            else grpc.aio.insecure_channel(target, options=_OPTIONS)
        )
        self.stub = gateway_pb2_grpc.GatewayStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    def generate(
        self, request: gateway_pb2.GenerateRequest, metadata: tuple[tuple[str, str], ...]
    ) -> grpc.aio.UnaryStreamCall:
        return self.stub.Generate(request, metadata=metadata or None)

    async def list_models(
        self, metadata: tuple[tuple[str, str], ...]
    ) -> list[gateway_pb2.ModelInfo]:
        resp = await self.stub.ListModels(
            gateway_pb2.ListModelsRequest(), metadata=metadata or None, timeout=self.rpc_timeout_s
        )
        return list(resp.models)

    async def serving(self, timeout_s: float) -> bool:
        try:
            resp = await self.health.Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.aio.AioRpcError:
            return False
        return resp.status == health_pb2.HealthCheckResponse.SERVING


def forwarded(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The caller's headers that become gRPC metadata (lower-case keys, values unchanged)."""
    return tuple((h, v) for h in FORWARDED_HEADERS if (v := headers.get(h)) is not None)
