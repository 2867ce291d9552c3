"""The first real path: gateway -> scheduler -> worker -> real forward passes, state in etcd."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
import torch
from transformers import AutoTokenizer

from slinfer import Chunk, Completion
from slinfer.services.common.engine_types import EngineKind
from slinfer.services.inprocess import LiveStack
from tests.engine.reference import Reference
from tests.live.support import recorded_token_ids
from tests.live.waits import wait_until
from tests.reference import reference_model

pytestmark = [pytest.mark.live, pytest.mark.asyncio(loop_scope="session")]


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


async def test_greedy_output_is_transformers_greedy_choice(stack: LiveStack, tiny_models) -> None:
    """The text streamed is that of the engine's tokens, and each token is what
    transformers' model picks greedily in the engine's dtype (tests/engine/reference.py)."""
    engine = stack.engine_of(await _instance_of(stack, "llama"))
    reference = _reference(engine, tiny_models)
    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    prompt = tok("The quick brown fox").input_ids
    with recorded_token_ids(stack) as seen:
        result = await stack.c.complete(
            "llama", prompt_token_ids=prompt, max_tokens=16, temperature=0, request_id="fox"
        )
    ids = seen["fox"]
    assert len(ids) == result.completion.completion_tokens
    assert result.text == tok.decode(ids, skip_special_tokens=True) and result.text
    reference.assert_greedy("llama", prompt, ids, 16, _compute_dtype(engine))


def _reference(engine, tiny_models) -> Reference:
    """transformers' model with the weights `engine` runs (dequantized where quantized)."""
    quantized = bool(getattr(engine, "weights", None)) and engine.weights.quantized
    return Reference(
        tiny_models,
        build=lambda arch, dtype: reference_model(tiny_models[arch], engine, dtype),
        # PyTorch's int8/int4 kernels take no float64 activations
        exact_dtype=torch.float32 if quantized else torch.float64,
    )


def _compute_dtype(engine) -> torch.dtype:
    """The precision whose rounding the check allows. The OpenVINO CPU plugin quantizes the
    activations of int8/int4-weight layers to 8 bits on the fly (dynamic quantization), an
    error of the order of bf16 rounding even when it infers in fp32; the other engines compute
    in their own dtype."""
    weights = getattr(engine, "weights", None)
    if engine.kind is EngineKind.OPENVINO and weights is not None and weights.quantized:
        return torch.bfloat16
    return engine.dtype


async def _instance_of(stack: LiveStack, model: str) -> str:
    await stack.c.complete(model, "warm up", max_tokens=1, temperature=0)
    status = await stack.c.status()
    return next(i.instance_id for i in status.instances if i.model_id == model)


async def test_concurrent_requests_share_iterations(stack: LiveStack, tiny_models) -> None:
    iid = await _instance_of(stack, "llama")
    engine = stack.engine_of(iid)
    reference = _reference(engine, tiny_models)
    before = len(engine.stats().batch_sizes)
    prompts = [engine.encode(f"Request number {i} says") for i in range(4)]
    with recorded_token_ids(stack) as seen:
        together = await asyncio.gather(
            *(
                stack.c.complete(
                    "llama", prompt_token_ids=p, max_tokens=10, temperature=0, request_id=f"r{i}"
                )
                for i, p in enumerate(prompts)
            )
        )
    sizes = list(engine.stats().batch_sizes)[before:]
    assert max(sizes) > 1, f"concurrent requests never shared an iteration: {sizes}"
    # Batched, each is still its own greedy answer (to the dtype's rounding: bf16 batches may
    # break near-ties differently from a request alone, so not compared with one).
    for i, (prompt, result) in enumerate(zip(prompts, together, strict=True)):
        ids = seen[f"r{i}"]
        assert result.text == engine.tokenizer.decode(ids, skip_special_tokens=True)
        reference.assert_greedy("llama", prompt, ids, 10, _compute_dtype(engine))


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

    def drained() -> bool:
        st = engine.stats()
        return (st.running, st.waiting, st.kv_used_tokens) == (0, 0, 0)

    await wait_until(drained, what="the aborted request to leave the engine")


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
