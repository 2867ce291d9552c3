"""Fixtures for the CPU engine tests: engines over the session's tiny models, and references
computed with transformers' own `generate`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from slinfer.services.worker.engine.torch_config import DTypePolicy, TorchEngineConfig
from slinfer.services.worker.engine.torch_engine import TorchEngine

# One thread: the test machine is shared, and oversubscribed OpenMP threads make small
# kernels orders of magnitude slower.
THREADS = 1

EngineFactory = Callable[..., TorchEngine]


@pytest.fixture
def make_engine(tiny_models: dict[str, Path]) -> Iterator[EngineFactory]:
    engines: list[TorchEngine] = []

    def make(arch: str = "llama", kv_capacity_tokens: int = 4096, **kw) -> TorchEngine:
        config = TorchEngineConfig(
            model_dir=tiny_models[arch],
            kv_capacity_tokens=kv_capacity_tokens,
            dtype=kw.pop("dtype", DTypePolicy.FP32),
            num_threads=kw.pop("num_threads", THREADS),
            **kw,
        )
        engine = TorchEngine(config)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture(scope="session")
def hf_greedy(tiny_models: dict[str, Path]) -> Callable[[str, list[int], int], list[int]]:
    """transformers' own greedy continuation (sdpa attention, DynamicCache), cached."""
    from transformers import AutoModelForCausalLM

    models: dict[str, torch.nn.Module] = {}
    memo: dict[tuple[str, tuple[int, ...], int], list[int]] = {}

    def generate(arch: str, prompt: list[int], max_new_tokens: int) -> list[int]:
        key = (arch, tuple(prompt), max_new_tokens)
        if key not in memo:
            if arch not in models:
                models[arch] = AutoModelForCausalLM.from_pretrained(
                    tiny_models[arch], dtype=torch.float32, local_files_only=True
                ).eval()
            ids = torch.tensor([prompt])
            with torch.inference_mode():
                out = models[arch].generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    do_sample=False,
                    max_new_tokens=max_new_tokens,
                )
            memo[key] = out[0, len(prompt) :].tolist()
        return memo[key]

    return generate

