"""Fixtures of the memory tests (test_memory.py, test_memory_watermark.py): a tiny model's
footprint as this environment's workers load it, and a node limit derived from it."""

from __future__ import annotations

import pytest

from slinfer.services.common.engine_types import WeightFormat
from slinfer.services.worker.engine.dtype import cpu_dtype_from_env
from slinfer.services.worker.engine.registry import CPU_ENGINE_ENV
from slinfer.services.worker.engine.torch_config import dtype_name
from tests.live.support import Footprint, measure_footprint


@pytest.fixture(scope="module")
def torch_engine_default():
    """The memory service's mechanisms (deferred scale-up, watermark, never-fit) tested on
    the PyTorch engine, whatever the CPU default: its KV pool resizes in place. The OpenVINO
    engine's resize by rebuild has its own tests (tests/openvino) and
    `bench/memory.py --engine openvino`."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CPU_ENGINE_ENV, "torch")
        yield


@pytest.fixture(scope="module")
def plain_weights() -> str:
    """Unquantized weights in the engine's dtype: a load is planned at the node's dtype width
    before the engine measures it (docs/MEMORY.md), and these tests derive exact limits from
    the bytes; quantized weights are planned high (safe) until measured."""
    return {"float32": "fp32", "bfloat16": "bf16"}[dtype_name(cpu_dtype_from_env())]


@pytest.fixture(scope="module")
def tiny(torch_engine_default, plain_weights, tiny_models) -> Footprint:
    return measure_footprint(tiny_models["llama"], WeightFormat(plain_weights))


@pytest.fixture(scope="module")
def limit(tiny: Footprint) -> int:
    """What the node offers: two instances of 1024 and 2048 KV tokens, plus 512 tokens.
    Growing the first to 2048 fits once the second has shrunk, and not before."""
    return 2 * tiny.weights_bytes + (1024 + 2048 + 512) * tiny.kv_bytes_per_token
