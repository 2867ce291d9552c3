"""Fixtures for the CPU engine tests: engines over the session's tiny models in both dtypes,
and transformers' own model as the reference, in the same dtype.

Every test that builds an engine runs twice, in fp32 and in bf16 (`engine_dtype`), on any
CPU: bf16 without AVX512_BF16 is emulated and slow, but these models are tiny. What a greedy
comparison may assert depends on the dtype's rounding, so the reference says it
(`assert_greedy`): each token the engine chose must be the reference model's argmax given the
same tokens before it, up to a tolerance measured from the reference's own rounding error.
Where the reference's top-2 margin exceeds that tolerance this is token equality; where two
tokens are closer than the rounding can tell apart, either is a correct greedy choice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import torch

from slinfer.services.worker.engine.torch_config import DTypePolicy, TorchEngineConfig
from slinfer.services.worker.engine.torch_engine import TorchEngine

from .reference import Reference

# One thread: the test machine is shared, and oversubscribed OpenMP threads make small
# kernels orders of magnitude slower.
THREADS = 1
ENGINE_DTYPES = (DTypePolicy.FP32, DTypePolicy.BF16)

EngineFactory = Callable[..., TorchEngine]


@pytest.fixture(params=ENGINE_DTYPES, ids=[p.value for p in ENGINE_DTYPES])
def engine_dtype(request: pytest.FixtureRequest) -> DTypePolicy:
    return request.param


@pytest.fixture
def make_engine(tiny_models: dict[str, Path], engine_dtype: DTypePolicy) -> Iterator[EngineFactory]:
    engines: list[TorchEngine] = []

    def make(arch: str = "llama", kv_capacity_tokens: int = 4096, **kw) -> TorchEngine:
        config = TorchEngineConfig(
            model_dir=tiny_models[arch],
            kv_capacity_tokens=kv_capacity_tokens,
            dtype=kw.pop("dtype", engine_dtype),
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
def reference(tiny_models: dict[str, Path]) -> Reference:
    return Reference(tiny_models)


@pytest.fixture
def hf_greedy(
    reference: Reference, engine_dtype: DTypePolicy
) -> Callable[[str, list[int], int], list[int]]:
    """transformers' own greedy continuation (`generate`), in the engine's dtype."""
    dtype = torch_dtype(engine_dtype)
    return lambda arch, prompt, n: reference.generate(arch, prompt, n, dtype)


@pytest.fixture
def assert_greedy(
    reference: Reference, engine_dtype: DTypePolicy
) -> Callable[[str, Sequence[int], Sequence[int], int], None]:
    """assert_greedy(arch, prompt, tokens, max_tokens): `tokens` is a greedy continuation of
    `prompt` (see the module docstring) that ends at EOS or after `max_tokens`."""
    dtype = torch_dtype(engine_dtype)
    return lambda arch, prompt, got, n: reference.assert_greedy(arch, prompt, got, n, dtype)


def torch_dtype(policy: DTypePolicy) -> torch.dtype:
    return torch.bfloat16 if policy is DTypePolicy.BF16 else torch.float32
