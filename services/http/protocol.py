"""OpenAI request bodies, validated, and their translation to the gateway's GenerateRequest.

Validation happens once here, with pydantic in strict mode: a wrong type, a non-finite number
or a value out of range is a 400 naming the field (`messages[0].content`, `temperature`).
Fields slinfer cannot honour (n > 1, logprobs, tools, penalties, ...) are refused by name
rather than ignored; informational fields (`user`, `metadata`) and unknown ones are ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slinfer.services.http.errors import ApiError, invalid
from slinfer.v1 import common_pb2, gateway_pb2

_M = TypeVar("_M", bound="BaseModel")
Finite = Annotated[float, Field(allow_inf_nan=False)]
# OpenAI's "developer" role is its newer name for "system".
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    include_usage: bool = False


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: str
    content: str | list[TextPart] | None = None
    name: str | None = None


class _Sampling(BaseModel):
    """Fields the two endpoints share."""

    model_config = ConfigDict(extra="ignore", strict=True)
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: Finite | None = Field(default=None, ge=0)
    top_p: Finite | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: Finite = Field(default=0.0, ge=0, le=0)
    frequency_penalty: Finite = Field(default=0.0, ge=0, le=0)
    logit_bias: dict[str, Any] | None = None
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens whatever the model says
    user: str | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int]
    echo: bool = False
    best_of: int | None = Field(default=None, ge=1, le=1)
    logprobs: int | None = Field(default=None, le=0)
    suffix: str | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, le=0)
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None


def _param(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "list[str]", "list[int]", "list[TextPart]"):
            continue  # pydantic's union-member names are not fields
        else:
            out += f".{part}" if out else str(part)
    return out


def parse(cls: type[_M], body: bytes) -> _M:
    try:
        return cls.model_validate_json(body or b"{}")
    except ValidationError as exc:
        err = exc.errors()[0]
        if err["type"] == "json_invalid":
            raise ApiError(400, f"the body is not valid JSON: {err['msg']}") from None
        param = _param(tuple(err["loc"]))
        raise invalid(param, f"{param}: {err['msg']}") from None


def _unsupported(field: str, why: str) -> ApiError:
    return ApiError(400, f"{field}: {why}", param=field, code="unsupported_parameter")


def _sampling(req: _Sampling, max_tokens: int | None) -> common_pb2.SamplingParams:
    if req.stream_options is not None and not req.stream:
        raise invalid("stream_options", "stream_options: allowed only when stream is true")
    if req.logit_bias:
        raise _unsupported("logit_bias", "not supported by slinfer")
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    for i, s in enumerate(stops):
        if not s:
            name = "stop" if isinstance(req.stop, str) else f"stop[{i}]"
            raise invalid(name, f"{name}: stop strings must not be empty")
    pb = common_pb2.SamplingParams(stop=stops, ignore_eos=req.ignore_eos)
    if max_tokens is not None:
        pb.max_tokens = max_tokens
    if req.temperature is not None:
        pb.temperature = req.temperature
    if req.top_p is not None:
        pb.top_p = req.top_p
    if req.seed is not None:
        if not -(2**63) <= req.seed < 2**63:
            raise invalid("seed", "seed: must fit in 64 bits")
        pb.seed = req.seed
    return pb


def completion_request(req: CompletionRequest, request_id: str) -> gateway_pb2.GenerateRequest:
    if req.echo:
        raise _unsupported("echo", "not supported by slinfer")
    if req.suffix:
        raise _unsupported("suffix", "not supported by slinfer")
    out = gateway_pb2.GenerateRequest(
        model=req.model, request_id=request_id, sampling=_sampling(req, req.max_tokens)
    )
    prompt = req.prompt
    if not prompt:
        raise invalid("prompt", "prompt: must not be empty")
    if isinstance(prompt, str):
        out.prompt = prompt
    elif prompt and all(isinstance(p, int) for p in prompt):
        out.prompt_token_ids.extend(prompt)  # type: ignore[arg-type]
    elif len(prompt) == 1:
        out.prompt = str(prompt[0])
    else:
        raise invalid("prompt", "prompt: give one prompt (a string or token ids) per request")
    return out


def _content(i: int, m: ChatMessage) -> str:
    if isinstance(m.content, str):
        return m.content
    if m.content is None:
        raise invalid(f"messages[{i}].content", f"messages[{i}].content: required")
    texts = []
    for j, part in enumerate(m.content):
        if part.type != "text" or part.text is None:
            name = f"messages[{i}].content[{j}]"
            raise invalid(name, f"{name}: only text parts are supported, got {part.type!r}")
        texts.append(part.text)
    return "".join(texts)


def chat_request(req: ChatCompletionRequest, request_id: str) -> gateway_pb2.GenerateRequest:
    for field in ("tools", "functions"):
        if getattr(req, field):
            raise _unsupported(field, "tool calling is not supported by slinfer")
    if req.tool_choice not in (None, "none"):
        raise _unsupported("tool_choice", "tool calling is not supported by slinfer")
    if req.logprobs:
        raise _unsupported("logprobs", "not supported by slinfer")
    if req.response_format and req.response_format.get("type", "text") != "text":
        raise _unsupported("response_format", "only {'type': 'text'} is supported")
    messages = []
    for i, m in enumerate(req.messages):
        role = _ROLES.get(m.role)
        if role is None:
            name = f"messages[{i}].role"
            raise invalid(name, f"{name}: must be one of {sorted(_ROLES)}, got {m.role!r}")
        messages.append(gateway_pb2.ChatMessage(role=role, content=_content(i, m)))
    max_tokens = req.max_completion_tokens or req.max_tokens
    return gateway_pb2.GenerateRequest(
        model=req.model,
        request_id=request_id,
        messages=messages,
        sampling=_sampling(req, max_tokens),
    )


Kind = Literal["chat", "completion"]
