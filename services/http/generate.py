"""Completions and chat completions: one gateway Generate call per HTTP request.

The first gateway message is awaited before the HTTP status is chosen, so an unknown model,
bad parameters or no capacity get their own status (404, 400, 429) even when streaming;
that wait holds a cold start for as long as the gateway does (its TTFT deadline). A client
that leaves cancels the gRPC call, and the gateway aborts the request on its worker at once,
freeing its KV.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import grpc
from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from loguru import logger

from slinfer.services.http import metrics
from slinfer.services.http.errors import ApiError, from_grpc
from slinfer.services.http.gateway import GatewayClient, forwarded
from slinfer.services.http.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    Kind,
    chat_request,
    completion_request,
    parse,
)
from slinfer.services.http.responses import DONE, Reply, sse
from slinfer.v1 import gateway_pb2

T = TypeVar("T")
ENDPOINTS: dict[Kind, str] = {"chat": "/v1/chat/completions", "completion": "/v1/completions"}
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ClientGone(Exception):
    """The HTTP client disconnected before the answer began."""


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_client_leaves(request: Request, work: Awaitable[T], call: Any) -> T:
    """`work`'s result, or ClientGone (and the gRPC call cancelled) if the client leaves first."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if task.done():
        return task.result()
    task.cancel()
    call.cancel()
    raise ClientGone


def _prepare(
    kind: Kind, body: bytes, request_id: str
) -> tuple[gateway_pb2.GenerateRequest, Reply, bool]:
    common: ChatCompletionRequest | CompletionRequest
    if kind == "chat":
        common = parse(ChatCompletionRequest, body)
        req = chat_request(common, request_id)
    else:
        common = parse(CompletionRequest, body)
        req = completion_request(common, request_id)
    usage = bool(common.stream_options and common.stream_options.include_usage)
    return req, Reply(kind, request_id, common.model, include_usage=usage), common.stream


async def generate(request: Request, gateway: GatewayClient, kind: Kind) -> Response:
    endpoint = ENDPOINTS[kind]
    t0 = time.monotonic()
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    request_id = request.headers.get("x-request-id") or f"{prefix}-{uuid.uuid4().hex}"
    prompt_field = "messages" if kind == "chat" else "prompt"
    greq, reply, stream = _prepare(kind, await request.body(), request_id)
    call = gateway.generate(greq, forwarded(request.headers))
    try:
        if stream:
            first = await _unless_client_leaves(request, call.read(), call)
        else:
            text, final = await _unless_client_leaves(request, _collect(call), call)
    except grpc.aio.AioRpcError as exc:
        raise from_grpc(exc.code(), exc.details() or "", prompt_field) from None
    except ClientGone:
        metrics.DISCONNECTS.labels(endpoint).inc()
        metrics.REQUESTS.labels(endpoint, "499").inc()
        logger.info("client gone before the answer: request={} model={}", request_id, reply.model)
        return Response(status_code=499)
    headers = {"X-Request-Id": request_id}
    metrics.REQUESTS.labels(endpoint, "200").inc()
    if not stream:
        metrics.DURATION.labels(endpoint).observe(time.monotonic() - t0)
        return JSONResponse(reply.full(text, final), headers=headers)
    return StreamingResponse(
        _events(call, first, reply, prompt_field, endpoint, t0),
        media_type="text/event-stream",
        headers={**headers, **_SSE_HEADERS},
    )


async def _collect(call: Any) -> tuple[str, gateway_pb2.Completion]:
    texts: list[str] = []
    while True:
        msg = await call.read()
        if msg is grpc.aio.EOF:
            raise ApiError(502, "the gateway ended the stream without a final message")
        if msg.HasField("final"):
            return "".join(texts), msg.final
        texts.append(msg.chunk.text)


async def _events(
    call: Any, msg: Any, reply: Reply, prompt_field: str, endpoint: str, t0: float
) -> AsyncIterator[bytes]:
    try:
        opening = reply.first_chunk()
        if opening is not None:
            yield opening
        while True:
            if msg is grpc.aio.EOF:
                err = ApiError(502, "the gateway ended the stream without a final message")
                yield sse(err.body()) + DONE
                return
            if msg.HasField("final"):
                yield reply.final_chunks(msg.final)
                return
            yield reply.text_chunk(msg.chunk.text)
            msg = await call.read()
    except grpc.aio.AioRpcError as exc:  # after the 200: the error travels as an event
        yield sse(from_grpc(exc.code(), exc.details() or "", prompt_field).body()) + DONE
    except asyncio.CancelledError:
        metrics.DISCONNECTS.labels(endpoint).inc()
        logger.info("client gone mid-stream: request={} model={}", reply.id, reply.model)
        raise
    finally:
        call.cancel()  # no-op once finished; otherwise the gateway aborts the request
        metrics.DURATION.labels(endpoint).observe(time.monotonic() - t0)
