"""Fixtures of the memory tests (test_memory.py, test_memory_watermark.py): a tiny model's
footprint as this environment's workers load it, and a node limit derived from it."""

from __future__ import annotations

import pytest

from tests.live.support import Footprint, measure_footprint


@pytest.fixture(scope="module")
def tiny(tiny_models) -> Footprint:
    return measure_footprint(tiny_models["llama"])


@pytest.fixture(scope="module")
def limit(tiny: Footprint) -> int:
    """What the node offers: two instances of 1024 and 2048 KV tokens, plus 512 tokens.
    Growing the first to 2048 fits once the second has shrunk, and not before."""
    return 2 * tiny.weights_bytes + (1024 + 2048 + 512) * tiny.kv_bytes_per_token
