"""Every Gateway RPC answers bad input with the right status and an actionable message, never
INTERNAL, and loses nothing: after every class of bad input a normal request succeeds."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from slinfer import SlinferError
from slinfer.services.inprocess import LiveStack
from slinfer.services.scheduler.dispatch import DispatchConfig
from slinfer.v1 import gateway_pb2, gateway_pb2_grpc

pytestmark = [pytest.mark.live, pytest.mark.asyncio(loop_scope="session")]

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@pytest.fixture(scope="module")
def broken_models(tiny_models, tmp_path_factory) -> dict[str, Path]:
    """Copies of the tiny llama, each broken one way."""
    root = tmp_path_factory.mktemp("broken")
    out: dict[str, Path] = {}

    def copy(name: str) -> Path:
        d = root / name
        shutil.copytree(tiny_models["llama"], d)
        out[name] = d
        return d

    weights = copy("garbage-header") / "model.safetensors"
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + b"\x00" * 64)
    weights = copy("truncated") / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    weights = copy("huge-header") / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[:8] = (2**62).to_bytes(8, "little")
    weights.write_bytes(bytes(data))
    (copy("bad-config") / "config.json").write_text("{ not json")
    (copy("no-tokenizer") / "tokenizer.json").unlink()
    config = copy("bad-heads") / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "num_attention_heads": "x"}))
    (root / "a-file").write_text("not a directory")
    out["a-file"] = root / "a-file"
    (root / "empty-dir").mkdir()
    out["empty-dir"] = root / "empty-dir"
    return out


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def stack(etcd, tiny_models, profile_dir):
    # A small node (200 MiB) so a huge KV pool can never fit.
    s = await LiveStack.start(
        etcd.endpoint,
        workers=[{"node_id": "small", "memory_bytes": 200 << 20, "profile_dir": profile_dir}],
        dispatch=DispatchConfig(default_kv_capacity_tokens=1024),
    )
    # Generous SLOs: the requests that should be served must not depend on this machine's
    # speed under load (the default TTFT SLO is 0.5 s).
    await s.c.deploy("llama", str(tiny_models["llama"]), ttft_slo_s=60.0, tpot_slo_s=5.0)
    yield s
    await s.stop()


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[LiveStack, dict[str, Any]], Awaitable[Any]]
    code: grpc.StatusCode
    needle: str  # the message names what is wrong (and so what to change)


def gen(**kwargs: Any) -> Callable[[LiveStack, dict[str, Any]], Awaitable[Any]]:
    model = kwargs.pop("model", "llama")
    return lambda s, _p: s.c.complete(model, **kwargs)


def deploy(model_id: str, path: Any, **opts: Any) -> Callable[..., Awaitable[Any]]:
    def call(s: LiveStack, paths: dict[str, Any]) -> Awaitable[Any]:
        where = paths[path] if isinstance(path, str) and path in paths else path
        return s.c.deploy(model_id, str(where), **opts)

    return call


def raw_generate(payload: bytes) -> Callable[..., Awaitable[Any]]:
    """A Generate whose request bytes are `payload`, unparsed by the client."""

    async def call(s: LiveStack, _p: dict[str, Any]) -> None:
        async with grpc.aio.insecure_channel(s.scheduler.address) as channel:
            method = channel.unary_stream(
                "/slinfer.v1.Gateway/Generate",
                request_serializer=lambda b: b,
                response_deserializer=gateway_pb2.GenerateResponse.FromString,
            )
            try:
                async for _ in method(payload, timeout=30):
                    pass
            except grpc.aio.AioRpcError as exc:
                raise SlinferError(exc.code(), exc.details() or "") from None

    return call


def resume(token_ids: list[int], **kwargs: Any) -> Callable[..., Awaitable[Any]]:
    async def call(s: LiveStack, _p: dict[str, Any]) -> None:
        req = gateway_pb2.GenerateRequest(
            model="llama", prompt="hi", resume=gateway_pb2.Resume(token_ids=token_ids)
        )
        if "max_tokens" in kwargs:
            req.sampling.max_tokens = kwargs["max_tokens"]
        stub = gateway_pb2_grpc.GatewayStub(s.c._channels[0])
        try:
            async for _ in stub.Generate(req, timeout=30):
                pass
        except grpc.aio.AioRpcError as exc:
            raise SlinferError(exc.code(), exc.details() or "") from None

    return call


# Invalid UTF-8 in field 2 (prompt): valid wire format, not a valid proto3 string.
_BAD_UTF8 = b"\x0a\x05llama\x12\x02\xc3\x28"
_WRONG_WIRE = b"\x0a\xff\xff\xff\xff\x0f"  # a length past the end of the message

CASES = [
    # ---- Generate: the prompt ----
    Case("empty prompt", gen(prompt=""), INVALID, "prompt is empty"),
    Case("prompt and messages", gen(prompt="hi", messages=[{"role": "user", "content": "x"}]),
         INVALID, "not both"),  # fmt: skip
    Case("prompt and token ids", gen(prompt="hi", prompt_token_ids=[1, 2]), INVALID, "not both"),
    Case("unknown role", gen(messages=[{"role": "robot", "content": "x"}]), INVALID, "role"),
    Case("empty message", gen(messages=[{"role": "user", "content": ""}]), INVALID, "content"),
    Case("too many messages", gen(messages=[{"role": "user", "content": "x"}] * 1025),
         INVALID, "messages"),  # fmt: skip
    Case("prompt too long", gen(prompt="x" * ((1 << 20) + 1)), INVALID, "characters"),
    Case("token id past the vocabulary", gen(prompt_token_ids=[1, 2, 10_000_000]),
         INVALID, "prompt_token_ids"),  # fmt: skip
    Case("negative token id", gen(prompt_token_ids=[1, -2]), INVALID, "prompt_token_ids"),
    # ---- Generate: sampling ----
    Case("max_tokens 0", gen(prompt="hi", max_tokens=0), INVALID, "max_tokens"),
    Case("max_tokens negative", gen(prompt="hi", max_tokens=-3), INVALID, "max_tokens"),
    Case("max_tokens past the context", gen(prompt="hi", max_tokens=100_000), INVALID, "context"),
    Case("temperature negative", gen(prompt="hi", temperature=-0.5), INVALID, "temperature"),
    Case("temperature NaN", gen(prompt="hi", temperature=math.nan), INVALID, "temperature"),
    Case("temperature +inf", gen(prompt="hi", temperature=math.inf), INVALID, "temperature"),
    Case("temperature -inf", gen(prompt="hi", temperature=-math.inf), INVALID, "temperature"),
    Case("temperature huge", gen(prompt="hi", temperature=1e6), INVALID, "temperature"),
    Case("top_p 0", gen(prompt="hi", top_p=0.0), INVALID, "top_p"),
    Case("top_p above 1", gen(prompt="hi", top_p=1.5), INVALID, "top_p"),
    Case("top_p NaN", gen(prompt="hi", top_p=math.nan), INVALID, "top_p"),
    Case("empty stop string", gen(prompt="hi", stop=[""]), INVALID, "stop"),
    Case("too many stop strings", gen(prompt="hi", stop=[f"s{i}" for i in range(17)]),
         INVALID, "stop"),  # fmt: skip
    Case("stop string too long", gen(prompt="hi", stop=["x" * 300]), INVALID, "stop"),
    # ---- Generate: ids, model, resume, the message itself ----
    Case("request id with spaces", gen(prompt="hi", request_id="bad id!"), INVALID, "request_id"),
    Case("request id too long", gen(prompt="hi", request_id="r" * 200), INVALID, "request_id"),
    Case("no model", gen(model="", prompt="hi"), INVALID, "model is required"),
    Case("unknown model", gen(model="nope", prompt="hi"), NOT_FOUND, "not deployed"),
    Case("model name of 5000 characters", gen(model="m" * 5000, prompt="hi"),
         NOT_FOUND, "not deployed"),  # fmt: skip
    Case("resume past the vocabulary", resume([10_000_000]), INVALID, "resume"),
    Case("resume longer than max_tokens", resume([1, 2, 3], max_tokens=2), INVALID, "resume"),
    Case("invalid UTF-8 in the prompt", raw_generate(_BAD_UTF8), INVALID, "does not parse"),
    Case("malformed message", raw_generate(_WRONG_WIRE), INVALID, "does not parse"),
    # ---- DeployModel: paths and files ----
    Case("empty path", deploy("m1", ""), INVALID, "path is required"),
    Case("missing path", deploy("m1", "/nonexistent/model"), INVALID, "does not exist"),
    Case("path of 5000 characters", deploy("m1", "/" + "a" * 5000), INVALID, "characters"),
    Case("path component over 255 bytes", deploy("m1", "/tmp/" + "b" * 300), INVALID, "255"),
    Case("path with NUL", deploy("m1", "/tmp/a\x00b"), INVALID, "NUL"),
    Case("path is a file", deploy("m1", "a-file"), INVALID, "not a directory"),
    Case("directory without config.json", deploy("m1", "empty-dir"), PRECONDITION, "config.json"),
    Case("config.json not JSON", deploy("m1", "bad-config"), PRECONDITION, "not valid JSON"),
    Case("config.json with a bad field", deploy("m1", "bad-heads"), PRECONDITION, "cannot read"),
    Case("no tokenizer", deploy("m1", "no-tokenizer"), PRECONDITION, "tokenizer"),
    Case("weights header garbage", deploy("m1", "garbage-header"), PRECONDITION, "corrupt"),
    Case("weights truncated", deploy("m1", "truncated"), PRECONDITION, "truncated"),
    Case("weights header length absurd", deploy("m1", "huge-header"), PRECONDITION, "corrupt"),
    # ---- DeployModel: ids and settings ----
    Case("model id with spaces", deploy("bad id!", "llama"), INVALID, "model_id"),
    Case("model id too long", deploy("m" * 65, "llama"), INVALID, "model_id"),
    Case("tpot_slo_s negative", deploy("m2", "llama", tpot_slo_s=-1.0), INVALID, "tpot_slo_s"),
    Case("tpot_slo_s NaN", deploy("m2", "llama", tpot_slo_s=math.nan), INVALID, "tpot_slo_s"),
    Case("ttft_slo_s infinite", deploy("m2", "llama", ttft_slo_s=math.inf), INVALID, "ttft_slo_s"),
    Case("keep_alive_s negative", deploy("m2", "llama", keep_alive_s=-5.0),
         INVALID, "keep_alive_s"),  # fmt: skip
    Case("keep_alive_s infinite", deploy("m2", "llama", keep_alive_s=math.inf),
         INVALID, "keep_alive_s"),  # fmt: skip
    Case("kv_capacity_tokens 0", deploy("m2", "llama", kv_capacity_tokens=0),
         INVALID, "kv_capacity_tokens"),  # fmt: skip
    Case("kv_capacity_tokens absurd", deploy("m2", "llama", kv_capacity_tokens=2**40),
         INVALID, "kv_capacity_tokens"),  # fmt: skip
    Case("openvino on a GPU", deploy("m2", "llama", engine="openvino", device="gpu"),
         INVALID, "openvino"),  # fmt: skip
    Case("vllm with int4 weights", deploy("m2", "llama", engine="vllm", weights="int4"),
         INVALID, "weights auto"),  # fmt: skip
    # ---- "can never run" is FAILED_PRECONDITION, at deploy ----
    Case("GPU on a CPU-only cluster", deploy("m2", "llama", device="gpu"),
         PRECONDITION, "can never run"),  # fmt: skip
    Case("KV pool larger than any node", deploy("m2", "llama", kv_capacity_tokens=50_000_000),
         PRECONDITION, "can never run"),  # fmt: skip
    Case("deploy over an existing model", deploy("llama", "llama"),
         grpc.StatusCode.ALREADY_EXISTS, "already deployed"),  # fmt: skip
    Case("delete an unknown model", lambda s, _p: s.c.delete("nope"), NOT_FOUND, "not deployed"),
    # ---- keys ----
    Case("key for an invalid tenant", lambda s, _p: s.c.create_key("bad tenant!"),
         INVALID, "tenant"),  # fmt: skip
    Case("revoke without an id", lambda s, _p: s.c.revoke_key(""), INVALID, "key_id"),
]


async def test_at_least_forty_classes() -> None:
    assert len({c.name for c in CASES}) == len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_bad_input_is_refused_and_loses_nothing(
    stack: LiveStack, tiny_models, broken_models, case: Case
) -> None:
    paths = {**broken_models, "llama": tiny_models["llama"]}
    with pytest.raises(SlinferError) as info:
        await case.call(stack, paths)
    code, message = info.value.code, info.value.message
    assert code == case.code, f"{case.name}: {code.name}: {message}"
    assert case.needle in message, f"{case.name}: {message!r} should say {case.needle!r}"
    assert "internal error" not in message
    # The service still serves, and nothing the refused call named was created.
    result = await stack.c.complete("llama", "still serving", max_tokens=2, temperature=0)
    assert result.completion.completion_tokens >= 1
    assert {m.model_id for m in await stack.c.models()} == {"llama"}


async def test_duplicate_request_id_refused_and_original_untouched(stack: LiveStack) -> None:
    """A second request with the id of one still streaming is refused at once; the first
    finishes whole (it is not aborted)."""
    first = stack.c.generate(
        "llama", "a long answer", max_tokens=64, temperature=0, ignore_eos=True, request_id="dup"
    )
    events = [await anext(first)]  # the first chunk: it is streaming now
    with pytest.raises(SlinferError) as info:
        await stack.c.complete("llama", "hi", max_tokens=2, request_id="dup")
    assert info.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert "already streaming" in info.value.message
    events += [ev async for ev in first]
    final = events[-1]
    assert final.finish_reason == "length" and final.completion_tokens == 64
    # Once it finished, the id is free again.
    again = await stack.c.complete("llama", "hi", max_tokens=2, request_id="dup")
    assert again.completion.completion_tokens == 2


async def test_refusals_carry_no_internal_status(stack: LiveStack) -> None:
    """A failure the engine hits on one request is isolated (test_faults.py); input the
    gateway can check never reaches it: NaN through the raw API is refused too."""
    req = gateway_pb2.GenerateRequest(model="llama", prompt="hi")
    req.sampling.temperature = math.nan
    stub = gateway_pb2_grpc.GatewayStub(stack.c._channels[0])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.Generate(req, timeout=30):
            pass
    assert info.value.code() == INVALID
