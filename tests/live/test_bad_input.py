"""Every Gateway RPC answers bad input with a clear status and loses nothing."""

from __future__ import annotations

import grpc
import pytest
import pytest_asyncio

from slinfer import SlinferError
from slinfer.services.inprocess import LiveStack
from slinfer.services.scheduler.dispatch import DispatchConfig

pytestmark = [pytest.mark.live, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def stack(etcd, tiny_models, profile_dir):
    # A small node (200 MiB) so a huge KV request can never fit.
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


async def _code(coro) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(SlinferError) as info:
        await coro
    return info.value.code, info.value.message


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"prompt": ""}, "prompt is empty"),
        ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "hi", "max_tokens": -3}, "max_tokens"),
        ({"prompt": "hi", "max_tokens": 100_000}, "context"),
        ({"prompt": "hi", "temperature": -0.5}, "temperature"),
        ({"prompt": "hi", "top_p": 0.0}, "top_p"),
        ({"prompt": "hi", "top_p": 1.5}, "top_p"),
        ({"prompt": "hi", "messages": [{"role": "user", "content": "x"}]}, "not both"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({"prompt": "hi", "stop": [""]}, "stop"),
        ({"prompt_token_ids": [1, 2, 10_000_000]}, "prompt_token_ids"),
        ({"prompt": "hi", "prompt_token_ids": [1, 2]}, "not both"),
    ],
)
async def test_generate_invalid_argument(stack: LiveStack, kwargs, needle) -> None:
    code, msg = await _code(stack.c.complete("llama", **kwargs))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in msg


async def test_unknown_model_not_found(stack: LiveStack) -> None:
    code, msg = await _code(stack.c.complete("nope", "hi"))
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in msg
    code, _ = await _code(stack.c.delete("nope"))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_deploy_bad_path(stack: LiveStack, tmp_path) -> None:
    code, msg = await _code(stack.c.deploy("m1", str(tmp_path / "missing")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "does not exist" in msg
    code, msg = await _code(stack.c.deploy("m1", str(tmp_path)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "config.json" in msg
    code, _ = await _code(stack.c.deploy("m1", ""))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_deploy_bad_ids_and_values(stack: LiveStack, tiny_models) -> None:
    path = str(tiny_models["llama"])
    code, _ = await _code(stack.c.deploy("bad id!", path))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = await _code(stack.c.deploy("m2", path, tpot_slo_s=-1.0))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = await _code(stack.c.deploy("m2", path, kv_capacity_tokens=0))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = await _code(stack.c.deploy("m2", path, engine="openvino", device="gpu"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, msg = await _code(stack.c.deploy("m2", path, engine="vllm", weights="int4"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "weights auto" in msg


async def test_duplicate_model_already_exists(stack: LiveStack, tiny_models) -> None:
    code, msg = await _code(stack.c.deploy("llama", str(tiny_models["qwen2"])))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "already deployed" in msg
    models = {m.model_id: m for m in await stack.c.models()}
    assert models["llama"].path == str(tiny_models["llama"].resolve()), "original spec kept"


async def test_no_capacity_is_resource_exhausted_after_bounded_wait(
    stack: LiveStack, tiny_models
) -> None:
    await stack.c.deploy("huge-kv", str(tiny_models["llama"]), kv_capacity_tokens=50_000_000)
    code, msg = await _code(stack.c.complete("huge-kv", "hi", max_tokens=2))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "no capacity" in msg
    await stack.c.delete("huge-kv")


async def test_bad_input_loses_nothing(stack: LiveStack) -> None:
    """After every refusal above, the service still serves."""
    result = await stack.c.complete("llama", "still serving", max_tokens=3, temperature=0)
    assert result.completion.completion_tokens >= 1
