"""The vLLM engine behind the real gateway: same answers as the PyTorch engine, sharing one
worker, aborts, unload/reload, and bad parameters stopped before vLLM."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import pytest_asyncio

from slinfer import Chunk, Completion, SlinferError
from slinfer.services.inprocess import LiveStack
from slinfer.services.worker.engine.dtype import DTypePolicy
from tests.engine.reference import Reference
from tests.live.support import recorded_token_ids
from tests.live.waits import wait_until

pytestmark = [pytest.mark.vllm, pytest.mark.live, pytest.mark.asyncio(loop_scope="session")]

PROMPT_IDS = [11, 42, 7, 99, 23, 5, 61, 8]
SLO = {"ttft_slo_s": 60.0, "tpot_slo_s": 10.0}  # about the engines, not admission


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def stack(vllm_importable, vllm_models, etcd, profile_dir):
    s = await LiveStack.start(
        etcd.endpoint,
        workers=[
            {
                "node_id": "cpu-0",
                "memory_bytes": 4 << 30,
                "num_threads": 1,
                "profile_dir": profile_dir,
                # Both engines in fp32 whatever the CPU or SLINFER_CPU_DTYPE: the greedy
                # comparison below is against transformers in fp32.
                "cpu_dtype": DTypePolicy.FP32,
            }
        ],
    )
    # fp32 weights: compared with transformers' fp32 model (weights=auto may quantize)
    await s.c.deploy("t-llama", str(vllm_models["llama"]), engine="torch", weights="fp32", **SLO)
    await s.c.deploy("v-llama", str(vllm_models["llama"]), engine="vllm", **SLO)
    await s.c.deploy("v-qwen", str(vllm_models["qwen2"]), engine="vllm", **SLO)
    yield s
    await s.stop()


async def _run(stack: LiveStack, model: str, **kw) -> tuple[str, Completion]:
    text, final = [], None
    async for ev in stack.c.generate(
        model, prompt_token_ids=PROMPT_IDS, **({"temperature": 0} | kw)
    ):
        if isinstance(ev, Chunk):
            text.append(ev.text)
        else:
            final = ev
    assert final is not None
    return "".join(text), final


async def test_greedy_through_gateway_equals_torch_engine(stack: LiveStack, vllm_models) -> None:
    """Both engines behind the gateway stream transformers' greedy choice (fp32; up to its
    rounding where two tokens tie: tests/engine/reference.py), as text of their tokens."""
    import torch
    from transformers import AutoTokenizer

    reference = Reference(vllm_models)
    tok = AutoTokenizer.from_pretrained(vllm_models["llama"], local_files_only=True)
    with recorded_token_ids(stack) as seen:
        torch_text, t = await _run(stack, "t-llama", max_tokens=16, request_id="t")
        vllm_text, v = await _run(stack, "v-llama", max_tokens=16, request_id="v")
    for rid, text in (("t", torch_text), ("v", vllm_text)):
        assert text and text == tok.decode(seen[rid], skip_special_tokens=True)
        reference.assert_greedy("llama", PROMPT_IDS, seen[rid], 16, torch.float32)
    assert v.completion_tokens == t.completion_tokens == 16 or "stop" in (
        v.finish_reason,
        t.finish_reason,
    )
    status = await stack.c.status()
    engines = {i.instance_id: i.engine for i in status.instances}
    assert engines[v.instance_id] == 2 and engines[t.instance_id] == 1  # vllm, torch


async def test_two_vllm_instances_on_one_worker_both_stream(stack: LiveStack) -> None:
    (a_text, a), (b_text, b) = await asyncio.gather(
        _run(stack, "v-llama", max_tokens=12, ignore_eos=True),
        _run(stack, "v-qwen", max_tokens=12, ignore_eos=True),
    )
    assert a.node_id == b.node_id == "cpu-0" and a.instance_id != b.instance_id
    assert a.completion_tokens == b.completion_tokens == 12
    assert a_text and b_text


async def test_abort_frees_the_request(stack: LiveStack) -> None:
    _, warm = await _run(stack, "v-llama", max_tokens=2)
    engine = stack.engine_of(warm.instance_id)
    gen = stack.c.generate(
        "v-llama", prompt_token_ids=PROMPT_IDS, max_tokens=500, temperature=0, ignore_eos=True
    )
    seen = 0
    async for ev in gen:
        if isinstance(ev, Chunk):
            seen += 1
            if seen == 2:
                break
    await gen.aclose()

    def drained() -> bool:
        st = engine.stats()
        return st.running == st.waiting == st.kv_used_tokens == 0

    await wait_until(drained, what="the aborted request to leave vLLM")


async def test_unload_then_load_serves_again(stack: LiveStack) -> None:
    before, first = await _run(stack, "v-qwen", max_tokens=8)
    await stack.workers[0].unload_instance(first.instance_id)
    after, second = await _run(stack, "v-qwen", max_tokens=8)
    assert second.instance_id != first.instance_id and second.load_s > 0
    assert after == before


async def test_bad_sampling_refused_before_vllm(stack: LiveStack) -> None:
    _, warm = await _run(stack, "v-llama", max_tokens=1)
    engine = stack.engine_of(warm.instance_id)
    iterations = engine.stats().iterations
    for bad in ({"top_p": 1.5}, {"temperature": -1.0}, {"max_tokens": 0}):
        with pytest.raises(SlinferError) as info:
            await _run(stack, "v-llama", **({"max_tokens": 4} | bad))
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert engine.stats().iterations == iterations, "a refused request reached vLLM"
