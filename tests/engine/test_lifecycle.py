"""Instances side by side, offload/load, resumed requests, validation, dtype policy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slinfer.services.worker.engine.base import (
    Engine,
    EngineError,
    FinishReason,
    InvalidRequest,
    NotLoaded,
)
from slinfer.services.worker.engine.torch_config import (
    DTypePolicy,
    TorchEngineConfig,
    read_cpu_flags,
    resolve_dtype,
)

from .helpers import collect, greedy, request, run_to_end

PROMPT = "The capital of France is"


def test_is_an_engine(make_engine) -> None:
    assert isinstance(make_engine("llama"), Engine)


def test_two_models_in_one_process_interleave(make_engine, hf_greedy) -> None:
    llama, qwen = make_engine("llama"), make_engine("qwen2")
    p_llama, p_qwen = llama.encode(PROMPT), qwen.encode("Hello")
    llama.add_request(request("same-id", p_llama, greedy(12)))
    qwen.add_request(request("same-id", p_qwen, greedy(12)))
    results: dict[str, dict] = {"llama": {}, "qwen": {}}
    while llama.has_work() or qwen.has_work():  # alternate iterations, as the arbiter would
        if llama.has_work():
            collect(results["llama"], llama.step())
        if qwen.has_work():
            collect(results["qwen"], qwen.step())
    assert results["llama"]["same-id"].tokens == hf_greedy("llama", p_llama, 12)
    assert results["qwen"]["same-id"].tokens == hf_greedy("qwen2", p_qwen, 12)


def test_offload_then_load_serves_again(make_engine, hf_greedy) -> None:
    engine = make_engine("llama", kv_capacity_tokens=256)
    prompt = engine.encode(PROMPT)
    expected = hf_greedy("llama", prompt, 8)
    assert run_to_end(engine, request("a", prompt, greedy(8)))["a"].tokens == expected

    engine.add_request(request("inflight", prompt, greedy(8)))
    with pytest.raises(EngineError):
        engine.offload()
    engine.abort_request("inflight")

    engine.offload()
    stats = engine.stats()
    assert not stats.loaded and stats.kv_bytes_allocated == 0 and stats.weights_bytes == 0
    with pytest.raises(NotLoaded):
        engine.add_request(request("b", prompt, greedy(8)))
    with pytest.raises(NotLoaded):
        engine.step()
    assert engine.resize_kv(512) == 0  # remembered for the next load
    assert engine.encode(PROMPT) == prompt  # the tokenizer stays

    engine.load()
    stats = engine.stats()
    assert stats.loaded and stats.kv_capacity_tokens == 512 and stats.weights_bytes > 0
    assert run_to_end(engine, request("b", prompt, greedy(8)))["b"].tokens == expected


def test_resumed_tokens_continue_the_same_greedy_answer(make_engine) -> None:
    engine = make_engine("qwen2")
    prompt = engine.encode(PROMPT)
    full = run_to_end(engine, request("full", prompt, greedy(16)))["full"]
    k = 5
    resumed = tuple(full.tokens[:k])
    rest = run_to_end(engine, request("rest", prompt, greedy(16), resumed=resumed))["rest"]
    assert rest.tokens == full.tokens[k:]
    assert rest.outputs[0].completion_tokens == k + 1
    assert rest.outputs[-1].completion_tokens == 16
    assert rest.finish_reason is FinishReason.LENGTH


@pytest.mark.parametrize(
    "bad",
    [
        "empty",
        "too_long",
        "out_of_vocab",
        "duplicate",
        "nothing_left",
    ],
)
def test_invalid_requests_are_refused(make_engine, bad) -> None:
    engine = make_engine("llama")
    prompt = engine.encode(PROMPT)
    engine.add_request(request("dup", prompt, greedy(4)))
    cases = {
        "empty": request("x", [], greedy(4)),
        "too_long": request("x", prompt, greedy(engine.max_model_len - len(prompt) + 1)),
        "out_of_vocab": request("x", [*prompt, engine.vocab_size], greedy(4)),
        "duplicate": request("dup", prompt, greedy(4)),
        "nothing_left": request("x", prompt, greedy(3), resumed=(5, 6, 7)),
    }
    before = engine.stats()
    with pytest.raises(InvalidRequest):
        engine.add_request(cases[bad])
    assert engine.stats() == before


def test_context_limit_is_exact(make_engine) -> None:
    engine = make_engine("llama", kv_capacity_tokens=2064)
    prompt = engine.encode(PROMPT)
    engine.add_request(request("edge", prompt, greedy(engine.max_model_len - len(prompt))))
    engine.abort_request("edge")


def test_bf16_engine_runs_with_a_bf16_pool(make_engine) -> None:
    engine = make_engine("llama", kv_capacity_tokens=64, dtype=DTypePolicy.BF16)
    assert engine.stats().kv_bytes_per_token == 2 * 2 * 16 * 2 * 2
    got = run_to_end(engine, request("r", engine.encode(PROMPT), greedy(6)))["r"]
    assert len(got.tokens) == 6


def test_dtype_policy() -> None:
    avx2 = frozenset({"avx", "avx2", "fma"})
    assert resolve_dtype(DTypePolicy.AUTO, avx2) is torch.float32
    assert resolve_dtype(DTypePolicy.AUTO, avx2 | {"amx_bf16"}) is torch.bfloat16
    assert resolve_dtype(DTypePolicy.AUTO, avx2 | {"avx512_bf16"}) is torch.bfloat16
    assert resolve_dtype(DTypePolicy.BF16, avx2) is torch.bfloat16
    assert resolve_dtype(DTypePolicy.FP32, avx2 | {"amx_bf16"}) is torch.float32


def test_read_cpu_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\n")
    assert read_cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_bf16"}
    assert read_cpu_flags(tmp_path / "missing") == frozenset()


def test_config_is_validated(tiny_models) -> None:
    with pytest.raises(ValueError, match="kv_capacity_tokens"):
        TorchEngineConfig(tiny_models["llama"], kv_capacity_tokens=-1)
    with pytest.raises(ValueError, match="not a model directory"):
        TorchEngineConfig(Path("/nonexistent"), kv_capacity_tokens=16)
    with pytest.raises(ValueError, match="dtype"):
        TorchEngineConfig(tiny_models["llama"], kv_capacity_tokens=16, dtype="bf16")
