"""The Python SDK: `Client` (blocking) and `AsyncClient` (asyncio) for the Gateway API.

    from slinfer import Client
    with Client("127.0.0.1:50051") as c:
        for event in c.generate("smollm2", "What is the capital of France?", max_tokens=32):
            if isinstance(event, Chunk):
                print(event.text, end="", flush=True)

Calls that fail with UNAVAILABLE are retried (tenacity, bounded) with the same request id;
a `generate` is retried only while no text has arrived, so a retry never repeats text.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from slinfer.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
_FINISH = {
    common_pb2.FINISH_REASON_STOP: "stop",
    common_pb2.FINISH_REASON_LENGTH: "length",
    common_pb2.FINISH_REASON_ABORT: "abort",
}
_ENGINES: dict[str, common_pb2.EngineKind] = {
    "auto": common_pb2.ENGINE_KIND_AUTO,
    "torch": common_pb2.ENGINE_KIND_TORCH,
    "vllm": common_pb2.ENGINE_KIND_VLLM,
    "openvino": common_pb2.ENGINE_KIND_OPENVINO,
}
_DEVICES: dict[str, common_pb2.DeviceKind] = {
    "auto": common_pb2.DEVICE_KIND_AUTO,
    "cpu": common_pb2.DEVICE_KIND_CPU,
    "gpu": common_pb2.DEVICE_KIND_GPU,
}
_WEIGHTS: dict[str, common_pb2.WeightFormat] = {
    "auto": common_pb2.WEIGHT_FORMAT_AUTO,
    "fp32": common_pb2.WEIGHT_FORMAT_FP32,
    "bf16": common_pb2.WEIGHT_FORMAT_BF16,
    "int8": common_pb2.WEIGHT_FORMAT_INT8,
    "int4": common_pb2.WEIGHT_FORMAT_INT4,
}


class SlinferError(Exception):
    """A Gateway call failed; `code` is the gRPC status, the message says what to do."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    tokens: int


@dataclass(frozen=True, slots=True)
class Completion:
    request_id: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float
    tpot_s: float
    load_s: float
    instance_id: str
    node_id: str


@dataclass(frozen=True, slots=True)
class Result:
    text: str
    completion: Completion


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.UNAVAILABLE


def _wrap(exc: grpc.RpcError) -> SlinferError:
    return SlinferError(exc.code(), exc.details() or "")


def _generate_request(
    model: str,
    prompt: str | None,
    messages: Sequence[dict[str, str]] | None,
    request_id: str | None,
    sampling: dict[str, Any],
    prompt_token_ids: Sequence[int] | None = None,
) -> gateway_pb2.GenerateRequest:
    params = common_pb2.SamplingParams()
    for name in ("temperature", "top_p", "max_tokens", "seed"):
        if sampling.get(name) is not None:
            setattr(params, name, sampling[name])
    if sampling.get("stop"):
        stop = sampling["stop"]
        params.stop.extend([stop] if isinstance(stop, str) else stop)
    if sampling.get("ignore_eos"):
        params.ignore_eos = True
    unknown = set(sampling) - {"temperature", "top_p", "max_tokens", "seed", "stop", "ignore_eos"}
    if unknown:
        raise TypeError(f"unknown sampling options: {sorted(unknown)}")
    return gateway_pb2.GenerateRequest(
        model=model,
        prompt=prompt or "",
        messages=[
            gateway_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in messages or []
        ],
        sampling=params,
        request_id=request_id or uuid.uuid4().hex,
        prompt_token_ids=list(prompt_token_ids or []),
    )


def _event(resp: gateway_pb2.GenerateResponse) -> Chunk | Completion:
    if resp.HasField("chunk"):
        return Chunk(resp.chunk.text, resp.chunk.tokens)
    f = resp.final
    return Completion(
        request_id=resp.request_id,
        finish_reason=_FINISH.get(f.finish_reason, "unknown"),
        prompt_tokens=f.prompt_tokens,
        completion_tokens=f.completion_tokens,
        ttft_s=f.ttft_s,
        tpot_s=f.tpot_s,
        load_s=f.load_s,
        instance_id=f.instance_id,
        node_id=f.node_id,
    )


def _deploy_request(model_id: str, path: str, **opts: Any) -> gateway_pb2.DeployModelRequest:
    req = gateway_pb2.DeployModelRequest(
        model_id=model_id,
        path=str(path),
        engine=_ENGINES[opts.pop("engine", "auto") or "auto"],
        device=_DEVICES[opts.pop("device", "auto") or "auto"],
        weights=_WEIGHTS[opts.pop("weights", "auto") or "auto"],
    )
    for name in ("ttft_slo_s", "tpot_slo_s", "keep_alive_s", "kv_capacity_tokens"):
        value = opts.pop(name, None)
        if value is not None:
            setattr(req, name, value)
    if opts:
        raise TypeError(f"unknown deploy options: {sorted(opts)}")
    return req


class Client:
    """Blocking client. Every call has a deadline (`timeout_s`, generate: `stream_timeout_s`)."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout_s: float = 30.0,
        stream_timeout_s: float = 600.0,
        retries: int = 4,
    ):
        self._channel = grpc.insecure_channel(address)
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)
        self.timeout_s, self.stream_timeout_s, self.retries = timeout_s, stream_timeout_s, retries

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _retrying(self) -> Retrying:
        return Retrying(
            retry=retry_if_exception(_unavailable),
            stop=stop_after_attempt(self.retries),
            wait=wait_exponential(multiplier=0.2, max=3.0),
            reraise=True,
        )

    def _unary(self, method: str, request: Any) -> Any:
        try:
            for attempt in self._retrying():
                with attempt:
                    return getattr(self._stub, method)(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _wrap(exc) from None

    def generate(
        self,
        model: str,
        prompt: str | None = None,
        *,
        messages: Sequence[dict[str, str]] | None = None,
        prompt_token_ids: Sequence[int] | None = None,
        request_id: str | None = None,
        **sampling: Any,
    ) -> Iterator[Chunk | Completion]:
        """Yield text chunks as tokens arrive, then one Completion."""
        req = _generate_request(model, prompt, messages, request_id, sampling, prompt_token_ids)
        sent_text = False
        try:
            for attempt in self._retrying():
                with attempt:
                    for resp in self._stub.Generate(req, timeout=self.stream_timeout_s):
                        sent_text = True
                        yield _event(resp)
                    return
        except grpc.RpcError as exc:
            if sent_text and _unavailable(exc):
                raise SlinferError(
                    exc.code(), f"stream broken after partial output: {exc.details()}"
                ) from None
            raise _wrap(exc) from None

    def complete(self, model: str, prompt: str | None = None, **kw: Any) -> Result:
        text, final = [], None
        for ev in self.generate(model, prompt, **kw):
            if isinstance(ev, Chunk):
                text.append(ev.text)
            else:
                final = ev
        assert final is not None
        return Result("".join(text), final)

    def deploy(self, model_id: str, path: str, **opts: Any) -> gateway_pb2.ModelInfo:
        return self._unary("DeployModel", _deploy_request(model_id, path, **opts)).model

    def delete(self, model_id: str) -> int:
        req = gateway_pb2.DeleteModelRequest(model_id=model_id)
        return int(self._unary("DeleteModel", req).instances_unloaded)

    def models(self) -> list[gateway_pb2.ModelInfo]:
        return list(self._unary("ListModels", gateway_pb2.ListModelsRequest()).models)

    def status(self) -> gateway_pb2.ClusterStatus:
        return self._unary("GetClusterStatus", gateway_pb2.GetClusterStatusRequest())


class AsyncClient:
    """asyncio client with the same methods as `Client`."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout_s: float = 30.0,
        stream_timeout_s: float = 600.0,
        retries: int = 4,
    ):
        self._channel = grpc.aio.insecure_channel(address)
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)
        self.timeout_s, self.stream_timeout_s, self.retries = timeout_s, stream_timeout_s, retries

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            retry=retry_if_exception(_unavailable),
            stop=stop_after_attempt(self.retries),
            wait=wait_exponential(multiplier=0.2, max=3.0),
            reraise=True,
        )

    async def _unary(self, method: str, request: Any) -> Any:
        try:
            async for attempt in self._retrying():
                with attempt:
                    return await getattr(self._stub, method)(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _wrap(exc) from None

    async def generate(
        self,
        model: str,
        prompt: str | None = None,
        *,
        messages: Sequence[dict[str, str]] | None = None,
        prompt_token_ids: Sequence[int] | None = None,
        request_id: str | None = None,
        **sampling: Any,
    ) -> AsyncIterator[Chunk | Completion]:
        req = _generate_request(model, prompt, messages, request_id, sampling, prompt_token_ids)
        sent_text = False
        try:
            async for attempt in self._retrying():
                with attempt:
                    call = self._stub.Generate(req, timeout=self.stream_timeout_s)
                    try:
                        async for resp in call:
                            sent_text = True
                            yield _event(resp)
                    finally:
                        call.cancel()  # a consumer that stops early releases the request
                    return
        except grpc.RpcError as exc:
            if sent_text and _unavailable(exc):
                raise SlinferError(
                    exc.code(), f"stream broken after partial output: {exc.details()}"
                ) from None
            raise _wrap(exc) from None

    async def complete(self, model: str, prompt: str | None = None, **kw: Any) -> Result:
        text, final = [], None
        async for ev in self.generate(model, prompt, **kw):
            if isinstance(ev, Chunk):
                text.append(ev.text)
            else:
                final = ev
        assert final is not None
        return Result("".join(text), final)

    async def deploy(self, model_id: str, path: str, **opts: Any) -> gateway_pb2.ModelInfo:
        return (await self._unary("DeployModel", _deploy_request(model_id, path, **opts))).model

    async def delete(self, model_id: str) -> int:
        req = gateway_pb2.DeleteModelRequest(model_id=model_id)
        return int((await self._unary("DeleteModel", req)).instances_unloaded)

    async def models(self) -> list[gateway_pb2.ModelInfo]:
        return list((await self._unary("ListModels", gateway_pb2.ListModelsRequest())).models)

    async def status(self) -> gateway_pb2.ClusterStatus:
        return await self._unary("GetClusterStatus", gateway_pb2.GetClusterStatusRequest())
