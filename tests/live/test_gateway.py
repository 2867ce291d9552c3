"""The first real path: gateway -> scheduler -> worker -> real forward passes, state in etcd."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from slinfer import Chunk, Completion
from slinfer.services.inprocess import LiveStack

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def stack(etcd, tiny_models, profile_dir):
    s = await LiveStack.start(
        etcd.endpoint,
        workers=[{"node_id": "cpu-0", "memory_bytes": 2 << 30, "profile_dir": profile_dir}],
    )
    # Generous SLOs: these tests are about the serving path, not admission under load.
    slo = {"ttft_slo_s": 30.0, "tpot_slo_s": 5.0}
    await s.c.deploy("llama", str(tiny_models["llama"]), **slo)
    await s.c.deploy("qwen", str(tiny_models["qwen2"]), **slo)
    yield s
    await s.stop()


async def test_generate_streams_chunks_then_final(stack: LiveStack) -> None:
    events = [
        ev
        async for ev in stack.c.generate(
            "llama", "Hello there, how are", max_tokens=12, temperature=0, request_id="req-1"
        )
    ]
    chunks = [e for e in events if isinstance(e, Chunk)]
    final = events[-1]
    assert isinstance(final, Completion)
    assert len(chunks) >= 2, "tokens must stream as they are produced, not in one piece"
    assert all(isinstance(e, Chunk) for e in events[:-1])
    assert final.request_id == "req-1"
    assert final.completion_tokens == 12 or final.finish_reason == "stop"
    assert final.finish_reason in ("stop", "length")
    assert final.prompt_tokens > 0 and final.ttft_s > 0
    assert final.instance_id.startswith("llama-") and final.node_id == "cpu-0"


async def test_greedy_output_equals_transformers_generate(stack: LiveStack, tiny_models) -> None:
    from transformers import AutoTokenizer

    from tests.reference import reference_model

    path = tiny_models["llama"]
    prompt = "The quick brown fox"
    tok = AutoTokenizer.from_pretrained(path)
    engine = stack.engine_of(await _instance_of(stack, "llama"))
    model = reference_model(path, engine)  # the engine's dtype and weight format
    ids = tok(prompt, return_tensors="pt").input_ids
    ref = model.generate(ids, max_new_tokens=16, do_sample=False, min_new_tokens=16)
    expected = tok.decode(ref[0, ids.shape[1] :], skip_special_tokens=True)
    result = await stack.c.complete("llama", prompt, max_tokens=16, temperature=0)
    assert result.completion.completion_tokens == 16 or result.completion.finish_reason == "stop"
    assert result.text == expected[: len(result.text)] and result.text


async def _instance_of(stack: LiveStack, model: str) -> str:
    await stack.c.complete(model, "warm up", max_tokens=1, temperature=0)
    status = await stack.c.status()
    return next(i.instance_id for i in status.instances if i.model_id == model)


async def test_concurrent_requests_share_iterations(stack: LiveStack) -> None:
    iid = await _instance_of(stack, "llama")
    engine = stack.engine_of(iid)
    before = len(engine.stats().batch_sizes)
    prompts = [f"Request number {i} says" for i in range(4)]
    alone = [
        (await stack.c.complete("llama", p, max_tokens=10, temperature=0)).text for p in prompts
    ]
    together = await asyncio.gather(
        *(stack.c.complete("llama", p, max_tokens=10, temperature=0) for p in prompts)
    )
    sizes = list(engine.stats().batch_sizes)[before:]
    assert max(sizes) > 1, f"concurrent requests never shared an iteration: {sizes}"
    assert [r.text for r in together] == alone, "batching changed greedy outputs"


async def test_two_models_on_one_worker(stack: LiveStack) -> None:
    a, b = await asyncio.gather(
        stack.c.complete("llama", "one model", max_tokens=6, temperature=0),
        stack.c.complete("qwen", "another model", max_tokens=6, temperature=0),
    )
    assert a.completion.node_id == b.completion.node_id == "cpu-0"
    assert a.completion.instance_id != b.completion.instance_id
    status = await stack.c.status()
    models = {i.model_id for i in status.instances if i.node_id == "cpu-0"}
    assert {"llama", "qwen"} <= models
    node = next(n for n in status.nodes if n.node_id == "cpu-0")
    assert node.instances >= 2 and node.memory_used_bytes > 0 and node.reachable


async def test_client_disconnect_aborts_on_worker(stack: LiveStack) -> None:
    iid = await _instance_of(stack, "llama")
    engine = stack.engine_of(iid)
    gen = stack.c.generate("llama", "Tell me a long story", max_tokens=400, temperature=0)
    got = 0
    async for ev in gen:
        if isinstance(ev, Chunk):
            got += 1
            if got == 3:
                break
    await gen.aclose()  # the client goes away mid-stream
    for _ in range(100):
        st = engine.stats()
        if st.running == 0 and st.waiting == 0 and st.kv_used_tokens == 0:
            break
        await asyncio.sleep(0.05)
    st = engine.stats()
    assert (st.running, st.waiting, st.kv_used_tokens) == (0, 0, 0), f"leaked: {st}"


async def test_scheduler_restart_rebuilds_state_from_etcd(stack: LiveStack) -> None:
    iid = await _instance_of(stack, "qwen")
    before = {m.model_id for m in await stack.c.models()}
    await stack.restart_scheduler()
    after = {m.model_id for m in await stack.c.models()}
    assert after == before
    status = await stack.c.status()
    assert iid in {i.instance_id for i in status.instances}
    result = await stack.c.complete("qwen", "still here?", max_tokens=4, temperature=0)
    assert result.completion.instance_id == iid, "restarted scheduler must reuse the instance"
    assert result.completion.load_s == 0.0


async def test_services_registered(stack: LiveStack) -> None:
    status = await stack.c.status()
    kinds = {s.split("/")[0] for s in status.services}
    assert {"scheduler", "memory", "consolidator"} <= kinds


async def test_token_id_prompt_and_ignore_eos_give_exact_lengths(stack: LiveStack) -> None:
    ids = [5, 17, 42, 99, 7, 3, 11, 64]
    result = await stack.c.complete(
        "llama", prompt_token_ids=ids, max_tokens=20, temperature=0, ignore_eos=True
    )
    assert result.completion.prompt_tokens == len(ids)
    assert result.completion.completion_tokens == 20
    assert result.completion.finish_reason == "length"
