"""What every slinfer gRPC server shares: health, reflection, metrics, structured logs."""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from loguru import logger
from prometheus_client import start_http_server

_logging_configured = False


def configure_logging(service: str, level: str | None = None) -> None:
    """One structured line per event on stderr: `time level service | message key=value`.
    SLINFER_LOG_JSON=1 switches to JSON lines (loguru's serialize)."""
    global _logging_configured
    if _logging_configured:
        return
    logger.remove()
    level = level or os.environ.get("SLINFER_LOG_LEVEL", "INFO")
    if os.environ.get("SLINFER_LOG_JSON") == "1":
        logger.add(sys.stderr, level=level, serialize=True)
    else:
        fmt = "{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} " + service + " | {message} {extra}"
        logger.add(sys.stderr, level=level, format=fmt)
    _logging_configured = True


def start_metrics(port: int | None) -> int | None:
    """Serve Prometheus /metrics on 127.0.0.1:port (0 = pick a free port, None = off)."""
    if port is None:
        return None
    server, _thread = start_http_server(
        port, addr=os.environ.get("SLINFER_METRICS_ADDR", "127.0.0.1")
    )
    actual = int(server.server_port)
    logger.info("metrics on http://127.0.0.1:{}/metrics", actual)
    return actual


def make_server(
    add_servicers: Iterable[Callable[[grpc.aio.Server], None]],
    service_names: Iterable[str],
    *,
    options: list[tuple[str, Any]] | None = None,
    interceptors: list[grpc.aio.ServerInterceptor] | None = None,
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """A grpc.aio server with the standard health service and reflection. Requests that do
    not parse are INVALID_ARGUMENT (MalformedGuard), never INTERNAL; `interceptors` (the
    bearer gate, security.py) run first."""
    server = grpc.aio.server(
        options=options or [("grpc.so_reuseport", 0)],
        interceptors=[*(interceptors or []), MalformedGuard()],
    )
    for add in add_servicers:
        add(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    return server, health_servicer


class _Malformed:
    def __init__(self, exc: Exception) -> None:
        self.message = (
            f"the request message does not parse ({type(exc).__name__}: {exc}); "
            "strings must be valid UTF-8 and fields must match the slinfer.v1 protos"
        )


class MalformedGuard(grpc.aio.ServerInterceptor):
    """A request that fails to deserialize (invalid UTF-8 in a string, a wrong wire type) is
    answered INVALID_ARGUMENT; grpc itself would answer INTERNAL."""

    async def intercept_service(self, continuation, handler_call_details):  # noqa: ANN001, ANN201
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        if handler.request_streaming:
            return handler  # none of slinfer's RPCs stream requests
        decode = handler.request_deserializer

        def deserialize(data: bytes) -> Any:
            try:
                return decode(data)
            except Exception as exc:
                return _Malformed(exc)

        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _guard(handler.unary_unary), deserialize, handler.response_serializer
            )
        return grpc.unary_stream_rpc_method_handler(
            _guard(handler.unary_stream), deserialize, handler.response_serializer
        )


def _guard(behavior: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def guarded_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, _Malformed):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            async for item in behavior(request, context):
                yield item

        return guarded_stream

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return guarded


async def set_serving(health_servicer: Any, names: Iterable[str], serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ["", *names]:
        await health_servicer.set(name, status)
