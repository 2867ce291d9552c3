"""What the SDK sends and receives: requests built from keyword options, the events a
`generate` yields, errors, and the state a broken stream resumes from (client.py uses them)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from slinfer.v1 import common_pb2, gateway_pb2

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

    def __init__(self, code: grpc.StatusCode, message: str, retry_after_s: float | None = None):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        # RESOURCE_EXHAUSTED for capacity: the gateway's hint of when to try again.
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    tokens: int
    token_ids: tuple[int, ...] = ()


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


def _broken(exc: grpc.RpcError) -> bool:
    """The stream broke on the way (the gateway died or went away), not a refusal."""
    code, details = exc.code(), (exc.details() or "")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return True
    return code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN) and (
        "RST_STREAM" in details or "Stream removed" in details or "Socket closed" in details
    )


def default_api_key() -> str | None:
    """$SLINFER_API_KEY, else the admin key `slinfer up` wrote to $SLINFER_HOME/api_key."""
    key = os.environ.get("SLINFER_API_KEY")
    if key:
        return key
    home = Path(os.environ.get("SLINFER_HOME", Path.home() / ".cache" / "slinfer"))
    path = home / "api_key"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _addresses(address: str | Sequence[str]) -> list[str]:
    out = [address] if isinstance(address, str) else list(address)
    if not out:
        raise ValueError("give at least one gateway address")
    return out


@dataclass
class _Stream:
    """What a generate has received: what a resume sends back."""

    request: gateway_pb2.GenerateRequest
    token_ids: list[int] = field(default_factory=list)
    resumes: int = 0

    def seen(self, resp: gateway_pb2.GenerateResponse) -> None:
        if resp.HasField("chunk"):
            self.token_ids.extend(resp.chunk.token_ids)

    def next_request(self) -> gateway_pb2.GenerateRequest:
        if not self.token_ids and not self.resumes:
            return self.request
        req = gateway_pb2.GenerateRequest()
        req.CopyFrom(self.request)
        req.resume.CopyFrom(gateway_pb2.Resume(token_ids=self.token_ids))
        return req


def _wrap(exc: grpc.RpcError) -> SlinferError:
    retry = None
    try:
        trailers = exc.trailing_metadata() or ()  # type: ignore[attr-defined]
    except Exception:
        trailers = ()
    for key, value in trailers:
        if key == "retry-after-s":
            try:
                retry = float(value)
            except ValueError:
                retry = None
    return SlinferError(exc.code(), exc.details() or "", retry)


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
    if sampling.get("deterministic"):
        params.deterministic = True
    if sampling.get("stop"):
        stop = sampling["stop"]
        params.stop.extend([stop] if isinstance(stop, str) else stop)
    if sampling.get("ignore_eos"):
        params.ignore_eos = True
    unknown = set(sampling) - {
        "temperature", "top_p", "max_tokens", "seed", "stop", "ignore_eos", "deterministic",
    }  # fmt: skip
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
        return Chunk(resp.chunk.text, resp.chunk.tokens, tuple(resp.chunk.token_ids))
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


def _create_key_request(
    tenant: str, admin: bool, name: str, limits: dict[str, int]
) -> gateway_pb2.CreateKeyRequest:
    unknown = set(limits) - {"max_concurrent_requests", "max_models"}
    if unknown:
        raise TypeError(f"unknown key options: {sorted(unknown)}")
    return gateway_pb2.CreateKeyRequest(
        tenant=tenant,
        role=gateway_pb2.ROLE_ADMIN if admin else gateway_pb2.ROLE_USER,
        name=name,
        **{k: int(v) for k, v in limits.items() if v},
    )
