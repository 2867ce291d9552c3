"""The OpenVINO engine behind the Engine interface: outputs, text, sampling, KV, lifecycle."""

from __future__ import annotations

import pytest
import torch

from slinfer.services.worker.engine.base import (
    EngineError,
    FinishReason,
    InvalidRequest,
    KVCapacityExceeded,
    NotLoaded,
    Phase,
    SamplingParams,
)
from slinfer.services.worker.engine.weight_format import WeightFormat
from tests.engine.helpers import collect, greedy, request, run_to_end
from tests.reference import reference_model

pytestmark = pytest.mark.openvino

PROMPTS = ["The capital of France is", "Hello", "café 🙂 and a longer prompt than the others"]


def hf_greedy_of(engine, arch_path, prompt: list[int], n: int) -> list[int]:
    model = reference_model(arch_path, engine)
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=n,
            min_new_tokens=n,
        )
    return out[0, len(prompt) :].tolist()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_batched_greedy_equals_transformers_generate(make_ov, tiny_models, arch) -> None:
    engine = make_ov(arch)
    prompts = [engine.encode(p) for p in PROMPTS]
    results = run_to_end(engine, *[request(f"r{i}", p, greedy(12)) for i, p in enumerate(prompts)])
    for i, p in enumerate(prompts):
        got = results[f"r{i}"].tokens
        assert got == hf_greedy_of(engine, tiny_models[arch], p, 12)[: len(got)] and got


@pytest.mark.parametrize("fmt", [WeightFormat.INT8, WeightFormat.INT4, WeightFormat.BF16])
def test_quantized_formats_compute_their_dequantized_model(make_ov, tiny_models, fmt) -> None:
    engine = make_ov("llama", weights=fmt)
    assert engine.weights is fmt
    prompt = engine.encode(PROMPTS[0])
    got = run_to_end(engine, request("a", prompt, greedy(10)))["a"].tokens
    assert got == hf_greedy_of(engine, tiny_models["llama"], prompt, 10)[: len(got)] and got


def test_weights_shrink_with_the_format(make_ov) -> None:
    sizes = {
        f: make_ov("llama", weights=f).stats().weights_bytes
        for f in WeightFormat
        if f is not WeightFormat.AUTO
    }
    assert sizes[WeightFormat.INT4] < sizes[WeightFormat.INT8] < sizes[WeightFormat.BF16]
    assert sizes[WeightFormat.BF16] < sizes[WeightFormat.FP32]


def test_one_step_is_one_iteration_of_the_whole_batch(make_ov) -> None:
    engine = make_ov("llama")
    for i, p in enumerate(PROMPTS):
        engine.add_request(request(f"r{i}", engine.encode(p), greedy(4)))
    first = engine.step()
    assert first.phase is Phase.PREFILL and first.batch_size == 3
    assert {o.request_id for o in first.outputs} == {"r0", "r1", "r2"}
    assert all(len(o.new_token_ids) == 1 for o in first.outputs)
    second = engine.step()
    assert second.phase is Phase.DECODE and second.batch_size == 3
    # a request added between steps joins the very next one
    engine.add_request(request("late", engine.encode("late"), greedy(2)))
    third = engine.step()
    assert "late" in {o.request_id for o in third.outputs} and third.phase is Phase.PREFILL


def test_stop_strings_eos_and_lengths(make_ov) -> None:
    engine = make_ov("llama")
    prompt = engine.encode(PROMPTS[0])
    free = run_to_end(engine, request("free", prompt, greedy(16)))["free"]
    assert free.finish_reason is FinishReason.LENGTH and len(free.tokens) == 16
    assert free.text == engine.tokenizer.decode(free.tokens, skip_special_tokens=True)
    stop = free.text[len(free.text) // 2 : len(free.text) // 2 + 3]
    if stop.strip():
        cut = run_to_end(engine, request("cut", prompt, greedy(16, stop=(stop,))))["cut"]
        assert cut.finish_reason is FinishReason.STOP
        assert cut.text == free.text[: free.text.find(stop)] and stop not in cut.text
    eos = next(iter(engine.eos_token_ids))
    forced = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    out = run_to_end(engine, request("ie", prompt, forced))["ie"]
    assert len(out.tokens) == 8 and out.finish_reason is FinishReason.LENGTH
    assert eos >= 0


def test_seeded_sampling_is_reproducible_whatever_the_batch(make_ov) -> None:
    engine = make_ov("llama")
    prompt = engine.encode(PROMPTS[1])
    params = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=12, seed=7)
    alone = run_to_end(engine, request("a", prompt, params))["a"].tokens
    mates = [
        request(f"m{i}", engine.encode(p), SamplingParams(temperature=1.0, max_tokens=12))
        for i, p in enumerate(PROMPTS)
    ]
    together = run_to_end(engine, request("b", prompt, params), *mates)["b"].tokens
    assert alone == together and len(alone) == 12
    other = run_to_end(engine, request("c", prompt, SamplingParams(1.0, 0.9, 12, seed=8)))
    assert other["c"].tokens != alone  # a different seed draws differently (12 draws)


def test_bad_requests_are_refused_and_leave_nothing(make_ov) -> None:
    engine = make_ov("llama")
    before = engine.stats()
    for bad in (
        request("x", [], greedy(4)),
        request("x", [engine.vocab_size + 5], greedy(4)),
        request("x", [1, 2], SamplingParams(temperature=-1.0)),
        request("x", [1, 2], SamplingParams(top_p=0.0)),
        request("x", [1, 2], greedy(engine.max_model_len)),
        request("x", [1, 2], greedy(3), resumed=(5, 6, 7)),
        # deterministic decoding is the PyTorch engine's (docs/RELIABILITY.md): refused here
        request("x", [1, 2], SamplingParams(temperature=0.0, max_tokens=2, deterministic=True)),
    ):
        with pytest.raises(InvalidRequest):
            engine.add_request(bad)
    assert engine.stats() == before and not engine.has_work()
    engine.add_request(request("dup", [1, 2], greedy(2)))
    with pytest.raises(InvalidRequest):
        engine.add_request(request("dup", [1, 2], greedy(2)))


def test_abort_frees_kv_at_once_and_others_continue(make_ov, tiny_models) -> None:
    engine = make_ov("llama", kv_capacity_tokens=256)
    keep, drop = engine.encode(PROMPTS[0]), engine.encode(PROMPTS[2])
    engine.add_request(request("keep", keep, greedy(10)))
    engine.add_request(request("drop", drop, greedy(10)))
    results: dict = {}
    collect(results, engine.step())
    used = engine.stats().kv_used_tokens
    out = engine.abort_request("drop")
    assert out is not None and out.finished and out.finish_reason is FinishReason.ABORT
    assert engine.stats().kv_used_tokens < used and engine.abort_request("drop") is None
    while engine.has_work():
        collect(results, engine.step())
    got = results["keep"].tokens
    assert got == hf_greedy_of(engine, tiny_models["llama"], keep, 10)


def test_full_pool_refuses_then_admits_after_resize(make_ov) -> None:
    engine = make_ov("llama", kv_capacity_tokens=64)  # 2 blocks of 32
    assert engine.stats().kv_capacity_tokens == 64
    engine.add_request(request("a", list(range(5, 45)), greedy(4)))  # 41 slots: 2 blocks
    before = engine.stats()
    with pytest.raises(KVCapacityExceeded):
        engine.add_request(request("b", list(range(5, 15)), greedy(4)))
    assert engine.stats() == before
    assert engine.resize_kv(128) == engine.stats().kv_bytes_allocated > before.kv_bytes_allocated
    engine.add_request(request("b", list(range(5, 15)), greedy(4)))
    results = run_to_end(engine)
    assert {r: v.finish_reason for r, v in results.items()} == {
        "a": FinishReason.LENGTH,
        "b": FinishReason.LENGTH,
    }


def test_resize_between_iterations_keeps_requests_exact(make_ov, tiny_models) -> None:
    engine = make_ov("llama", kv_capacity_tokens=256)
    prompt = engine.encode(PROMPTS[2])
    engine.add_request(request("r", prompt, greedy(14)))
    results: dict = {}
    for _ in range(5):
        collect(results, engine.step())
    engine.resize_kv(512)
    idle = engine.step()  # the pipeline rebuilds in the background: nothing runs meanwhile
    assert idle.phase is Phase.IDLE or idle.outputs
    collect(results, idle)
    assert engine.wait_ready(60)
    for _ in range(3):
        collect(results, engine.step())
    with pytest.raises(KVCapacityExceeded):
        engine.resize_kv(0)  # the request holds blocks
    engine.resize_kv(128)  # a shrink the request still fits in
    while engine.has_work():
        collect(results, engine.step())
    assert results["r"].tokens == hf_greedy_of(engine, tiny_models["llama"], prompt, 14)
    assert engine.resizes == 2 and engine.stats().kv_capacity_tokens == 128


def test_decode_growth_past_the_pool_preempts_the_youngest(make_ov, tiny_models) -> None:
    # 3 blocks; two requests of 28 prompt tokens each fit at admission (1 block each + 1),
    # but both decoding 30 tokens need 2 blocks each: the younger yields and is recomputed.
    engine = make_ov("llama", kv_capacity_tokens=96)
    prompts = [list(range(5, 33)), list(range(40, 68))]
    results = run_to_end(engine, *[request(f"r{i}", p, greedy(30)) for i, p in enumerate(prompts)])
    assert engine.stats().kv_pressure_events >= 1
    for i, p in enumerate(prompts):
        assert results[f"r{i}"].tokens == hf_greedy_of(engine, tiny_models["llama"], p, 30)


def test_request_larger_than_the_whole_pool_ends_with_length(make_ov) -> None:
    engine = make_ov("llama", kv_capacity_tokens=32)
    results = run_to_end(engine, request("r", list(range(5, 25)), greedy(40)))
    assert results["r"].finish_reason is FinishReason.LENGTH
    assert 0 < len(results["r"].tokens) < 40


def test_stats_offload_load_close(make_ov) -> None:
    engine = make_ov("llama", kv_capacity_tokens=100)
    s = engine.stats()
    # 2 layers x K,V x 2 KV heads x head_dim 16 x 4 bytes (f32 KV)
    assert s.kv_bytes_per_token == 2 * 2 * 2 * 16 * 4 and s.kv_capacity_tokens == 96
    assert s.kv_bytes_allocated == 96 * s.kv_bytes_per_token and s.kv_resizable
    engine.add_request(request("r", [1, 2, 3], greedy(3)))
    with pytest.raises(EngineError):
        engine.offload()
    engine.abort_request("r")
    engine.offload()
    assert not engine.stats().loaded and engine.stats().kv_bytes_allocated == 0
    with pytest.raises(NotLoaded):
        engine.add_request(request("r", [1, 2, 3], greedy(3)))
    engine.load()
    assert run_to_end(engine, request("r", [1, 2, 3], greedy(3)))["r"].tokens
