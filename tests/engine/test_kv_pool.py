"""KVPool on its own: block accounting and resize remapping."""

from __future__ import annotations

import pytest
import torch

from slinfer.services.worker.engine.base import KVCapacityExceeded
from slinfer.services.worker.engine.kv_pool import KVPool, KVSpec

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
    assert sorted(pool.table("b")) == [0, 1] and pool.free_blocks == 0  # moved into the front
    for layer, old in zip(pool.layers, before, strict=True):
        assert torch.equal(layer[:, pool.table("b")], old)
    with pytest.raises(KVCapacityExceeded):
        pool.resize(1)
    assert pool.resize(5) and pool.free_blocks == 3 and pool.reserve("c", 12)
    assert pool.table("c") == [2, 3, 4]


# A block of one layer's keys is exactly one page here, so residency is exact.
PAGED = KVSpec(num_layers=2, num_kv_heads=1, head_dim=64, dtype=torch.float32, block_size=16)


def _rss_bytes(tensor: torch.Tensor) -> int:
    """Resident bytes of the memory mapping holding `tensor` (/proc/self/smaps)."""
    addr = tensor.data_ptr()
    rss, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= addr < hi
            elif inside and head == "Rss:":
                rss = int(line.split()[1]) * 1024
    return rss


def _touch(pool: KVPool, request_id: str, tokens: int) -> None:
    assert pool.reserve(request_id, tokens)
    for layer in pool.layers:
        layer[:, pool.table(request_id)] = 1.0


def test_growing_allocates_nothing_until_blocks_are_written() -> None:
    pool = KVPool(PAGED, num_blocks=4, reserve_blocks=1024)
    layer = pool.layers[0]
    _touch(pool, "a", 64)  # 4 blocks
    before = _rss_bytes(layer)
    pool.resize(512)
    assert pool.capacity_tokens == 512 * 16 and _rss_bytes(layer) == before
    _touch(pool, "b", 16 * 100)  # 100 more blocks: their pages become resident now
    assert _rss_bytes(layer) >= before + 2 * 100 * PAGED.region_block_bytes


def test_shrinking_returns_the_tail_pages_and_keeps_live_data() -> None:
    pool = KVPool(PAGED, num_blocks=256, reserve_blocks=256)
    layer = pool.layers[1]
    _touch(pool, "a", 16 * 200)
    pool.release("a")
    _touch(pool, "b", 16 * 2)
    tail = pool.reserve("c", 16 * 200) and pool.table("c")[-1]
    pool.release("c")
    assert tail and tail >= 100  # b keeps blocks 0-1; c reached far into the pool
    for layer_idx, t in enumerate(pool.layers):
        t[:, pool.table("b")] = float(layer_idx + 7)
    full = _rss_bytes(layer)
    assert pool.resize(8) == 8 * PAGED.block_bytes
    after = _rss_bytes(layer)
    assert full - after >= 2 * 190 * PAGED.region_block_bytes  # keys and values of the tail
    for layer_idx, t in enumerate(pool.layers):
        assert torch.all(t[:, pool.table("b")] == float(layer_idx + 7))
    pool.resize(256)  # grown back: released blocks read as zeros
    assert torch.all(pool.layers[0][:, 8:] == 0)


def test_live_blocks_in_the_tail_move_to_the_front_on_shrink() -> None:
    pool = KVPool(PAGED, num_blocks=16, reserve_blocks=16)
    _touch(pool, "a", 16 * 12)
    pool.release("a")
    assert pool.reserve("x", 16 * 10)
    assert pool.reserve("y", 16 * 2) and min(pool.table("y")) >= 10
    for t in pool.layers:
        t[:, pool.table("y")] = 5.0
    pool.release("x")
    pool.resize(4)
    assert max(pool.table("y")) < 4
    for t in pool.layers:
        assert torch.all(t[:, pool.table("y")] == 5.0)


def test_beyond_the_reservation_the_pool_remaps_and_keeps_data() -> None:
    pool = KVPool(PAGED, num_blocks=4, reserve_blocks=4)
    _touch(pool, "a", 16 * 3)
    for t in pool.layers:
        t[:, pool.table("a")] = 3.0
    pool.resize(10)
    assert pool.remaps == 1 and pool.reserved_blocks >= 10 and pool.free_blocks == 7
    for t in pool.layers:
        assert torch.all(t[:, pool.table("a")] == 3.0)
