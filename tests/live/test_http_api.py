"""The OpenAI-compatible HTTP front against a live stack, driven by the official `openai` SDK."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import httpx
import openai
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from slinfer import SlinferError
from slinfer.services.http.server import HttpConfig, HttpService
from slinfer.services.inprocess import LiveStack
from slinfer.v1 import worker_pb2, worker_pb2_grpc

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.live]

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def stack(etcd, tiny_models, profile_dir):
    s = await LiveStack.start(
        etcd.endpoint,
        workers=[{"node_id": "cpu-0", "memory_bytes": 2 << 30, "profile_dir": profile_dir}],
    )
    # Generous SLOs: these tests are about the HTTP path, not admission under load; and the
    # PyTorch engine, whose requests stay running while its KV pool resizes (the OpenVINO
    # engine parks them during a rebuild), so a stream's engine state is what the tests see.
    await s.c.deploy(
        "llama", str(tiny_models["llama"]), ttft_slo_s=30.0, tpot_slo_s=5.0, engine="torch"
    )
    http = HttpService(
        HttpConfig(etcd=etcd.endpoint, gateway=s.scheduler.address, listen="127.0.0.1:0")
    )
    s.others.append(http)  # stopped with the stack
    await http.start()
    s.http = http  # type: ignore[attr-defined]
    yield s
    await s.stop()


def _url(stack: LiveStack, path: str = "") -> str:
    return f"http://{stack.http.address}{path}"  # type: ignore[attr-defined]


@pytest_asyncio.fixture(loop_scope="session")
async def oai(stack):
    # No retries: each test sees the first answer (the SDK retries 429 and 5xx by default).
    client = openai.AsyncOpenAI(base_url=_url(stack, "/v1"), api_key="sk-none", max_retries=0)
    yield client
    await client.close()


async def test_models_lists_the_deployed_models(oai) -> None:
    models = await oai.models.list()
    assert [m.id for m in models.data] == ["llama"]
    assert (await oai.models.retrieve("llama")).id == "llama"
    with pytest.raises(openai.NotFoundError):
        await oai.models.retrieve("nope")


async def test_completion_matches_the_grpc_gateway(stack, oai) -> None:
    grpc_result = await stack.c.complete("llama", "The quick brown", max_tokens=12, temperature=0)
    r = await oai.completions.create(
        model="llama", prompt="The quick brown", max_tokens=12, temperature=0
    )
    choice = r.choices[0]
    assert r.object == "text_completion" and r.model == "llama" and r.id.startswith("cmpl-")
    assert choice.text == grpc_result.text
    assert choice.finish_reason == grpc_result.completion.finish_reason
    assert r.usage.prompt_tokens == grpc_result.completion.prompt_tokens
    assert r.usage.completion_tokens == grpc_result.completion.completion_tokens
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


async def test_completion_stream_equals_the_whole_answer(oai) -> None:
    whole = await oai.completions.create(model="llama", prompt="Once", max_tokens=16, temperature=0)
    stream = await oai.completions.create(
        model="llama",
        prompt="Once",
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert sum(1 for t in texts if t) >= 2, "tokens must stream as they are produced"
    assert "".join(texts) == whole.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason and not any(finishes[:-1])


async def test_chat_applies_the_models_chat_template_like_grpc(stack, oai) -> None:
    grpc_result = await stack.c.complete("llama", messages=CHAT, max_tokens=10, temperature=0)
    r = await oai.chat.completions.create(
        model="llama", messages=CHAT, max_completion_tokens=10, temperature=0
    )
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == grpc_result.text
    assert r.usage.prompt_tokens == grpc_result.completion.prompt_tokens


async def test_chat_stream_with_usage(oai) -> None:
    whole = await oai.chat.completions.create(
        model="llama", messages=CHAT, max_tokens=10, temperature=0, seed=7
    )
    stream = await oai.chat.completions.create(
        model="llama",
        messages=CHAT,
        max_tokens=10,
        temperature=0,
        seed=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage == whole.usage and chunks[-1].choices == []
    assert all(c.usage is None for c in chunks[:-1])


async def test_stream_is_server_sent_events_ending_with_done(stack) -> None:
    body = {"model": "llama", "messages": CHAT, "max_tokens": 6, "stream": True}
    async with httpx.AsyncClient() as http:
        async with http.stream("POST", _url(stack, "/v1/chat/completions"), json=body) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            lines = [line async for line in resp.aiter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert {e["object"] for e in events} == {"chat.completion.chunk"}
    assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length")


async def test_unknown_model_is_404(oai) -> None:
    for stream in (False, True):
        with pytest.raises(openai.NotFoundError) as info:
            await oai.chat.completions.create(model="nope", messages=CHAT, stream=stream)
        assert info.value.status_code == 404
        assert info.value.body["param"] == "model"
        assert info.value.body["code"] == "model_not_found" and "nope" in info.value.message


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"temperature": -0.5}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 2}, "n"),
        ({"stop": [""]}, "stop[0]"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"messages": []}, "messages"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0]",
        ),
        ({"logprobs": True}, "logprobs"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
    ],
)
async def test_bad_parameters_are_400_naming_the_field(oai, kwargs, param) -> None:
    args = {"model": "llama", "messages": CHAT, "max_tokens": 4, **kwargs}
    with pytest.raises(openai.BadRequestError) as info:
        await oai.chat.completions.create(**args)
    assert info.value.status_code == 400
    assert info.value.body["param"] == param, info.value.body
    assert param.split("[")[0] in info.value.message


async def test_beyond_the_context_is_400_context_length_exceeded(oai) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await oai.chat.completions.create(model="llama", messages=CHAT, max_tokens=100_000)
    assert info.value.body["param"] == "messages"
    assert info.value.body["code"] == "context_length_exceeded"
    assert "max_tokens" in info.value.message and "context" in info.value.message


async def test_non_finite_and_malformed_bodies_are_400(stack) -> None:
    url = _url(stack, "/v1/completions")
    async with httpx.AsyncClient() as http:
        nan = await http.post(
            url,
            content=b'{"model": "llama", "prompt": "x", "temperature": NaN}',
            headers={"content-type": "application/json"},
        )
        broken = await http.post(url, content=b"{not json")
        wrong_type = await http.post(url, json={"model": "llama", "prompt": "x", "max_tokens": "9"})
    assert nan.status_code == 400 and nan.json()["error"]["param"] == "temperature"
    assert broken.status_code == 400 and "JSON" in broken.json()["error"]["message"]
    assert wrong_type.status_code == 400 and wrong_type.json()["error"]["param"] == "max_tokens"


async def test_can_never_run_is_refused_at_deploy(stack, tiny_models) -> None:
    # A KV pool no node can hold: FAILED_PRECONDITION at once, not a wait for capacity.
    with pytest.raises(SlinferError) as info:
        await stack.c.deploy("huge-kv", str(tiny_models["llama"]), kv_capacity_tokens=50_000_000)
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "can never run" in info.value.message


async def test_rate_limited_is_429_with_retry_after(stack) -> None:
    """A limit reached (here the tenant's concurrent requests) is 429 with Retry-After."""
    from slinfer.services.common import keys
    from slinfer.services.common.auth import TenantLimits, set_limits

    store = stack.scheduler.store
    await set_limits(store, "default", TenantLimits(max_concurrent_requests=1))
    await stack.scheduler.watcher.wait_for(lambda v: "default" in v.tenants, 10)
    try:
        first = stack.c.generate("llama", "long", max_tokens=400, ignore_eos=True, temperature=0)
        await anext(first)  # streaming: the tenant's one request
        async with httpx.AsyncClient(timeout=60) as http:
            resp = await http.post(
                _url(stack, "/v1/completions"),
                json={"model": "llama", "prompt": "hi", "max_tokens": 2},
            )
        assert resp.status_code == 429, resp.text
        assert int(resp.headers["retry-after"]) >= 1
        assert resp.json()["error"]["type"] == "rate_limit_error"
        assert "max_concurrent_requests" in resp.json()["error"]["message"]
        await first.aclose()
    finally:
        await store.delete(keys.tenant("default"))
        await stack.scheduler.watcher.wait_for(lambda v: "default" not in v.tenants, 10)


async def test_cold_start_is_held_not_refused(stack, oai, tiny_models) -> None:
    await stack.c.deploy("cold", str(tiny_models["qwen2"]), ttft_slo_s=30.0, tpot_slo_s=5.0)
    try:
        before = [i for i in (await stack.c.status()).instances if i.model_id == "cold"]
        assert before == [], "no instance yet: the first request starts one"
        r = await oai.completions.create(model="cold", prompt="Hi", max_tokens=3, temperature=0)
        assert r.usage.completion_tokens >= 1
        after = [i for i in (await stack.c.status()).instances if i.model_id == "cold"]
        assert len(after) == 1 and after[0].load_s > 0
    finally:
        await stack.c.delete("cold")


async def _engine_load(stack: LiveStack) -> tuple[int, int]:
    """(running requests, KV tokens used) of the llama instances, from the worker's Stats."""
    worker = stack.workers[0]
    async with grpc.aio.insecure_channel(worker.address) as channel:
        stats = await worker_pb2_grpc.WorkerStub(channel).Stats(
            worker_pb2.StatsRequest(), timeout=5
        )
    mine = [i for i in stats.instances if i.model_id == "llama"]
    return sum(i.running for i in mine), sum(i.kv_used_tokens for i in mine)


def _count(name: str, **labels: str) -> float:
    """A counter of the in-process services (they share this process's registry)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _aborted_on_worker() -> float:
    """Requests the worker ended early: its stream cancelled ("cancelled"), or the engine told
    to abort first by the scheduler's Abort ("abort"); which comes first is a race."""
    return sum(
        _count("slinfer:worker_requests_total", model_name="llama", status=status)
        for status in ("cancelled", "abort")
    )


async def test_disconnect_mid_stream_frees_the_request_at_once(stack) -> None:
    body = {
        "model": "llama",
        "prompt": "Count forever:",
        "max_tokens": 1900,
        "ignore_eos": True,
        "temperature": 0,
        "stream": True,
    }
    finished = _count("slinfer:request_success_total", model_name="llama", finished_reason="length")
    cancelled = _aborted_on_worker()
    received = 0
    async with httpx.AsyncClient(timeout=60) as http:
        async with http.stream("POST", _url(stack, "/v1/completions"), json=body) as resp:
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                if line.startswith("data: {"):
                    received += 1
                    if received == 5:
                        break
            running, used = await _engine_load(stack)
            assert running == 1 and used > 0, "the request is decoding before the client leaves"
    # The client has gone (connection closed): the request must leave the engine now (its
    # slot and KV freed, as the worker's Stats show), aborted, not run to its 1900 tokens.
    left_at = time.monotonic()
    while (await _engine_load(stack)) != (0, 0):
        assert time.monotonic() - left_at < 5.0, "the request still holds its slot or KV"
        await asyncio.sleep(0.02)
    # The worker counts the request when its Submit stream ends, which can come a moment
    # after the engine freed it (the scheduler's Abort may reach the engine first).
    while _aborted_on_worker() != cancelled + 1:
        assert time.monotonic() - left_at < 5.0, "the worker aborted the request"
        await asyncio.sleep(0.02)
    assert (
        _count("slinfer:request_success_total", model_name="llama", finished_reason="length")
        == finished
    ), "the request did not run to max_tokens"


async def test_health_and_ready(stack) -> None:
    async with httpx.AsyncClient() as http:
        health = await http.get(_url(stack, "/health"))
        ready = await http.get(_url(stack, "/ready"))
        metrics = await http.get(_url(stack, "/metrics"))
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert 'slinfer:http_requests_total{endpoint="/v1/chat/completions",status="200"}' in (
        metrics.text
    )


async def test_unreachable_gateway_is_503_and_not_ready(stack) -> None:
    from slinfer.services.common.etcd_process import free_port

    http = HttpService(
        HttpConfig(etcd=stack.etcd, gateway=f"127.0.0.1:{free_port()}", listen="127.0.0.1:0")
    )
    await http.start()
    try:
        base = f"http://{http.address}"
        async with httpx.AsyncClient(timeout=30) as client:
            ready = await client.get(base + "/ready")
            resp = await client.post(
                base + "/v1/completions", json={"model": "llama", "prompt": "x"}
            )
            health = await client.get(base + "/health")
        assert ready.status_code == 503
        assert ready.json()["etcd"] == "ok" and "not serving" in ready.json()["gateway"]
        assert resp.status_code == 503 and int(resp.headers["retry-after"]) >= 1
        assert resp.json()["error"]["type"] == "service_unavailable_error"
        assert health.status_code == 200, "liveness does not depend on the gateway"
    finally:
        await http.stop()


async def test_unreachable_etcd_is_not_ready(stack) -> None:
    from slinfer.services.common.etcd_process import free_port

    http = HttpService(
        HttpConfig(
            etcd=f"127.0.0.1:{free_port()}", gateway=stack.scheduler.address, listen="127.0.0.1:0"
        )
    )
    await http.start()
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            ready = await client.get(f"http://{http.address}/ready")
        assert ready.status_code == 503
        assert ready.json()["gateway"] == "ok" and "does not answer" in ready.json()["etcd"]
    finally:
        await http.stop()

