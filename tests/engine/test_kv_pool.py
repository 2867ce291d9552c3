"""KVPool on its own: block accounting and resize remapping."""

from __future__ import annotations

import pytest
import torch

from services.worker.engine.base import KVCapacityExceeded
from services.worker.engine.kv_pool import KVPool, KVSpec

SPEC = KVSpec(num_layers=2, num_kv_heads=1, head_dim=2, dtype=torch.float32, block_size=4)


def test_reserve_is_all_or_nothing() -> None:
    pool = KVPool(SPEC, num_blocks=3)
    assert pool.reserve("a", 5) and pool.table("a") == [0, 1]
    assert not pool.reserve("b", 9) and not pool.holds("b") and pool.free_blocks == 1
    assert pool.reserve("a", 8) and pool.table("a") == [0, 1]  # already covered
    assert pool.reserve("b", 1) and pool.free_blocks == 0
    pool.release("a")
    assert pool.free_blocks == 2 and pool.holders() == ["b"]


def test_resize_moves_live_blocks_and_remaps_tables() -> None:
    pool = KVPool(SPEC, num_blocks=4)
    pool.reserve("a", 4)
    pool.reserve("b", 8)
    pool.release("a")  # b holds blocks 1 and 2
    for layer_idx, layer in enumerate(pool.layers):
        for block in pool.table("b"):
            layer[:, block] = 10 * layer_idx + block
    before = [layer[:, pool.table("b")].clone() for layer in pool.layers]

    assert pool.resize(2) == 2 * 2 * 2 * 4 * 1 * 2 * 4  # layers * K/V * blocks * slots * ...
    assert pool.table("b") == [0, 1] and pool.free_blocks == 0
    for layer, old in zip(pool.layers, before, strict=True):
        assert torch.equal(layer[:, pool.table("b")], old)
    with pytest.raises(KVCapacityExceeded):
        pool.resize(1)
    assert pool.resize(5) and pool.free_blocks == 3 and pool.reserve("c", 12)
    assert pool.table("c") == [2, 3, 4]
