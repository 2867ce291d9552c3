"""The paged KV pool as the engine uses it: admission, abort, resize, exhaustion."""

from __future__ import annotations

import pytest
import torch

from slinfer.services.worker.engine.base import FinishReason, KVCapacityExceeded

from .helpers import collect, greedy, request, run_to_end

PROMPTS = ["The capital of France is", "Hello", "café 🙂"]


def kv_bytes_per_token(engine) -> int:
    """tiny models: 2 layers x 2 KV heads x head_dim 16 x (K and V), in the engine's dtype."""
    return 2 * 2 * 16 * 2 * torch.empty((), dtype=engine.dtype).element_size()


def pool_tensor_bytes(engine) -> int:
    """Bytes of the blocks the pool may hand out (its layers reserve more address space)."""
    pool = engine._pool  # white-box
    return sum(t[:, : pool.num_blocks].numel() * t.element_size() for t in pool.layers)


def test_bytes_allocated_come_from_the_pool_tensors(make_engine) -> None:
    engine = make_engine("llama", kv_capacity_tokens=100)  # 6 blocks of 16
    stats = engine.stats()
    assert stats.kv_capacity_tokens == 96 and stats.kv_bytes_per_token == kv_bytes_per_token(engine)
    assert stats.kv_bytes_allocated == pool_tensor_bytes(engine) == 96 * kv_bytes_per_token(engine)
    assert stats.weights_bytes > 0 and stats.kv_resizable


def test_request_that_does_not_fit_is_refused_without_trace(make_engine, assert_greedy) -> None:
    engine = make_engine("llama", kv_capacity_tokens=32)
    fits, too_long = engine.encode("Hello"), engine.encode("Grüße aus 日本 " * 3)
    engine.add_request(request("fits", fits, greedy(8)))
    before = engine.stats()
    with pytest.raises(KVCapacityExceeded):
        engine.add_request(request("big", too_long, greedy(8)))
    assert engine.stats() == before
    assert engine.resize_kv(128) == 128 * kv_bytes_per_token(engine)
    engine.add_request(request("big", too_long, greedy(8)))  # same id: no trace was left
    results: dict = {}
    while engine.has_work():
        collect(results, engine.step())
    assert_greedy("llama", fits, results["fits"].tokens, 8)
    assert_greedy("llama", too_long, results["big"].tokens, 8)


def test_abort_frees_blocks_at_once(make_engine, assert_greedy) -> None:
    engine = make_engine("llama", kv_capacity_tokens=256)
    keep, drop = engine.encode(PROMPTS[0]), engine.encode(PROMPTS[1])
    engine.add_request(request("keep", keep, greedy(12)))
    engine.add_request(request("drop", drop, greedy(12)))
    results: dict = {}
    for _ in range(3):
        collect(results, engine.step())
    used = engine.stats().kv_used_tokens
    out = engine.abort_request("drop")
    assert out.finished and out.finish_reason is FinishReason.ABORT
    assert out.completion_tokens == 3 and out.prompt_tokens == len(drop)
    assert engine.stats().kv_used_tokens == used - (len(drop) + 3)
    assert engine._pool.used_blocks == 1  # white-box: only "keep"'s block is held
    assert engine.abort_request("drop") is None and engine.abort_request("nope") is None
    while engine.has_work():
        collect(results, engine.step())
    assert_greedy("llama", keep, results["keep"].tokens, 12)


def test_resize_up_and_down_with_live_requests_keeps_outputs(make_engine, assert_greedy) -> None:
    engine = make_engine("qwen2", kv_capacity_tokens=256)
    prompts = [engine.encode(p) for p in PROMPTS]
    for i, prompt in enumerate(prompts):
        engine.add_request(request(f"r{i}", prompt, greedy(20)))
    results: dict = {}
    for _ in range(4):
        collect(results, engine.step())

    assert engine.resize_kv(2048) == 2048 * kv_bytes_per_token(engine) == pool_tensor_bytes(engine)
    for _ in range(4):
        collect(results, engine.step())

    live_blocks = engine._pool.used_blocks
    with pytest.raises(KVCapacityExceeded):
        engine.resize_kv((live_blocks - 1) * 16)
    assert engine.stats().kv_capacity_tokens == 2048  # unchanged by the refusal
    tight = (live_blocks + 1) * 16
    assert engine.resize_kv(tight) == tight * kv_bytes_per_token(engine)
    assert pool_tensor_bytes(engine) == tight * kv_bytes_per_token(engine)
    assert engine.stats().kv_bytes_allocated == tight * kv_bytes_per_token(engine)
    while engine.has_work():
        collect(results, engine.step())
        if engine.has_work() and engine.stats().kv_capacity_tokens < 512:
            engine.resize_kv(512)  # grow back as the requests do
    for i, prompt in enumerate(prompts):
        assert_greedy("qwen2", prompt, results[f"r{i}"].tokens, 20)


def test_exhausted_pool_preempts_the_youngest_and_recomputes(make_engine, assert_greedy) -> None:
    # 6 blocks: all three are admitted (one block each), but they cannot all grow to 46
    # tokens (3 blocks each) at once.
    engine = make_engine("llama", kv_capacity_tokens=96)
    prompts = [engine.encode(p) for p in PROMPTS]
    for i, prompt in enumerate(prompts):
        engine.add_request(request(f"r{i}", prompt, greedy(40)))
    results: dict = {}
    saw_preemption = False
    while engine.has_work():
        collect(results, engine.step())
        stats = engine.stats()
        saw_preemption |= stats.waiting > 0 and stats.running > 0
        assert stats.kv_bytes_allocated == 96 * kv_bytes_per_token(engine)
    assert saw_preemption
    for i, prompt in enumerate(prompts):
        assert_greedy("llama", prompt, results[f"r{i}"].tokens, 40)
        assert results[f"r{i}"].finish_reason is FinishReason.LENGTH


def test_request_outgrowing_the_whole_pool_finishes_with_length(make_engine, assert_greedy) -> None:
    engine = make_engine("llama", kv_capacity_tokens=32)
    prompt = engine.encode("Hello")
    got = run_to_end(engine, request("r", prompt, greedy(60)))["r"]
    assert got.finish_reason is FinishReason.LENGTH and got.outputs[-1].finished
    assert len(prompt) + len(got.tokens) == 32 + 1  # the last token was made from 32 slots
    assert_greedy("llama", prompt, got.tokens, len(got.tokens))
    assert engine.stats().kv_used_tokens == 0 and engine._pool.used_blocks == 0


def test_elastic_pool_makes_an_outgrowing_request_wait(make_engine, assert_greedy) -> None:
    """With the pool resized from outside (the worker's memory agent), a request that
    outgrows it sits iterations out, keeping its blocks, until the pool grows; it is not
    cut short with LENGTH as in a fixed pool (above)."""
    engine = make_engine("llama", kv_capacity_tokens=32, kv_elastic=True)
    prompt = engine.encode("Hello")
    engine.add_request(request("r", prompt, greedy(60)))
    results: dict = {}
    waits = 0
    while engine.has_work():
        iteration = engine.step()
        collect(results, iteration)
        if not iteration.outputs:  # nothing could run: the growth it waits for comes now
            waits += 1
            engine.resize_kv(engine.stats().kv_capacity_tokens + 16)
    got = results["r"]
    assert waits > 0 and len(got.tokens) == 60
    assert got.finish_reason is FinishReason.LENGTH and got.outputs[-1].completion_tokens == 60
    assert_greedy("llama", prompt, got.tokens, 60)
