"""A paged KV pool: per-layer block tensors, a block allocator, and per-request block tables.

Layout of one layer: `[2, num_blocks, block_size, num_kv_heads, head_dim]` (index 0 keys,
1 values). Token `p` of a request lives in slot `table[p // block_size] * block_size +
p % block_size` of the layer viewed as `[2, num_blocks * block_size, heads, dim]`.

Elastic without copies (the CPU counterpart of kvcached's virtual-memory KV on GPUs): each
layer is a view of an anonymous memory mapping that *reserves* address space for
`reserve_blocks` blocks, while only the first `num_blocks` (the capacity) may be handed out.
The OS commits a page when it is first written, so growing the capacity allocates nothing
until the new blocks are used, and there is never an old and a new pool side by side. A
shrink first moves live blocks from the tail into free blocks at the front (in place), then
returns the tail's pages to the OS (`madvise(MADV_DONTNEED)`); they read back as zeros.
`bytes_allocated` is `capacity × block bytes`: the resident memory is at most that, plus one
partly used page per layer and K/V region when a block is not a whole number of pages (none
for SmolLM2, whose 16-token block is 3 pages). Only a capacity beyond the reservation needs a
new mapping and a copy (old + new briefly; the reservation makes it rare).

On a CUDA device (the PyTorch engine with `device=cuda`) there is no address-space trick:
the layers are plain device tensors of exactly the capacity, and a resize allocates the new
size and copies the live blocks (old + new briefly, counted in `remaps`).

Blocks read as zeros until written: the attention kernel reads whole blocks, including slots
past a request's length (masked out), and masked garbage must be finite (0 * NaN is NaN).
"""

from __future__ import annotations

import math
import mmap
import os
import sys
from dataclasses import dataclass

import torch

from .base import KVCapacityExceeded

_MAP_NORESERVE = 0x4000 if sys.platform.startswith("linux") else 0  # address space only
# Default reservation, in tokens: far above any pool this project sizes, bounded by RAM below.
DEFAULT_RESERVE_TOKENS = 1 << 18


@dataclass(frozen=True, slots=True)
class KVSpec:
    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: torch.dtype
    block_size: int

    @property
    def kv_bytes_per_token(self) -> int:
        element_size = torch.empty((), dtype=self.dtype).element_size()
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * element_size

    @property
    def block_bytes(self) -> int:
        """One block of all layers, keys and values."""
        return self.block_size * self.kv_bytes_per_token

    @property
    def region_block_bytes(self) -> int:
        """One block of one layer's keys (or values): the unit laid out contiguously."""
        return self.block_bytes // (2 * self.num_layers)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)


def default_reserve_blocks(spec: KVSpec, num_blocks: int) -> int:
    """Blocks of address space to reserve: the default tokens, at most the machine's RAM."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 1 << 34
    blocks = min(spec.blocks_for(DEFAULT_RESERVE_TOKENS), max(1, ram // spec.block_bytes))
    return max(num_blocks, blocks)


class KVPool:
    def __init__(
        self,
        spec: KVSpec,
        num_blocks: int,
        reserve_blocks: int | None = None,
        device: str = "cpu",
    ) -> None:
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        self.spec = spec
        self.device = torch.device(device)
        if self.device.type == "cpu":
            reserve = default_reserve_blocks(spec, num_blocks) if reserve_blocks is None else None
            self._reserved = max(num_blocks, reserve_blocks or 0, reserve or 0, 1)
        else:
            self._reserved = max(num_blocks, 1)
        self._maps, self.layers = _map_layers(spec, self._reserved, self.device)
        self._capacity = num_blocks
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))  # pop() gives low ids first
        self._tables: dict[str, list[int]] = {}
        self.remaps = 0  # resizes beyond the reservation (a new mapping and a copy)

    @property
    def num_blocks(self) -> int:
        return self._capacity

    @property
    def reserved_blocks(self) -> int:
        return self._reserved

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.spec.block_size

    @property
    def free_blocks(self) -> int:
        return len(self._free)

    @property
    def used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def bytes_allocated(self) -> int:
        return self._capacity * self.spec.block_bytes

    def holders(self) -> list[str]:
        return list(self._tables)

    def holds(self, request_id: str) -> bool:
        return request_id in self._tables

    def table(self, request_id: str) -> list[int]:
        return self._tables[request_id]

    def reserve(self, request_id: str, num_tokens: int) -> bool:
        """Make the request's table cover `num_tokens` slots. All or nothing: on False the
        pool is unchanged."""
        table = self._tables.get(request_id, [])
        missing = self.spec.blocks_for(num_tokens) - len(table)
        if missing <= 0:
            return True
        if missing > len(self._free):
            return False
        table = table + [self._free.pop() for _ in range(missing)]
        self._tables[request_id] = table
        return True

    def release(self, request_id: str) -> None:
        table = self._tables.pop(request_id, None)
        if table:
            self._free.extend(reversed(table))

    def slot_ids(self, request_id: str, start: int, end: int) -> torch.Tensor:
        """Slots of token positions [start, end) of a request, as a LongTensor."""
        table = torch.tensor(self._tables[request_id], dtype=torch.long)
        positions = torch.arange(start, end, dtype=torch.long)
        block_size = self.spec.block_size
        return table[positions // block_size] * block_size + positions % block_size

    def resize(self, num_blocks: int) -> int:
        """Change the capacity to `num_blocks`; returns the bytes now allocated.

        Growing within the reservation allocates nothing up front; shrinking moves live blocks
        from the tail to free blocks in front (tables remapped), then releases the tail's pages.
        """
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        if self.used_blocks > num_blocks:
            raise KVCapacityExceeded(
                f"cannot shrink the KV pool to {num_blocks * self.spec.block_size} tokens: "
                f"{self.used_blocks * self.spec.block_size} token slots are in use"
            )
        if num_blocks > self._reserved:
            self._remap(num_blocks)
        if num_blocks < self._capacity:
            self._compact(num_blocks)
            if self.device.type == "cpu":
                self._release_tail(num_blocks, self._capacity)
            else:  # device memory: keep exactly the capacity
                self.layers = [layer[:, : max(num_blocks, 1)].clone() for layer in self.layers]
                self._reserved = max(num_blocks, 1)
            self._free = [b for b in self._free if b < num_blocks]
        else:
            self._free = list(range(num_blocks - 1, self._capacity - 1, -1)) + self._free
        self._capacity = num_blocks
        return self.bytes_allocated

    def _compact(self, num_blocks: int) -> None:
        """Move every live block at or past `num_blocks` into a free block below it."""
        moves: dict[int, int] = {}
        holes = sorted(b for b in self._free if b < num_blocks)
        for table in self._tables.values():
            for block in table:
                if block >= num_blocks:
                    moves[block] = holes.pop(0)
        if not moves:
            return
        src = torch.tensor(list(moves), dtype=torch.long)
        dst = torch.tensor(list(moves.values()), dtype=torch.long)
        for layer in self.layers:
            layer[:, dst] = layer[:, src]
        taken = set(moves.values())
        self._free = [b for b in self._free if b not in taken] + list(moves)
        self._tables = {
            rid: [moves.get(b, b) for b in table] for rid, table in self._tables.items()
        }

    def _release_tail(self, start: int, end: int) -> None:
        """Return the whole pages of blocks [start, end) of every layer to the OS."""
        region = self.spec.region_block_bytes
        for mapping in self._maps:
            for half in (0, 1):  # keys, then values
                base = half * self._reserved * region
                lo = _page_up(base + start * region)
                hi = _page_down(base + end * region)
                if hi > lo:
                    mapping.madvise(mmap.MADV_DONTNEED, lo, hi - lo)

    def _remap(self, num_blocks: int) -> None:
        """Past the reservation: a larger mapping, live blocks copied (old + new briefly)."""
        reserved = max(num_blocks, 2 * self._reserved) if self.device.type == "cpu" else num_blocks
        maps, layers = _map_layers(self.spec, reserved, self.device)
        n = self._capacity
        for old, new in zip(self.layers, layers, strict=True):
            new[:, :n] = old[:, :n]
        self._maps, self.layers, self._reserved = maps, layers, reserved
        self.remaps += 1


def _page_up(offset: int) -> int:
    return -(-offset // mmap.PAGESIZE) * mmap.PAGESIZE


def _page_down(offset: int) -> int:
    return offset // mmap.PAGESIZE * mmap.PAGESIZE


def _map_layers(
    spec: KVSpec, reserved: int, device: torch.device | None = None
) -> tuple[list[mmap.mmap], list[torch.Tensor]]:
    """One anonymous mapping per layer, viewed as `[2, reserved, block, heads, dim]` (on a
    CUDA device: zeroed device tensors)."""
    shape = (2, reserved, spec.block_size, spec.num_kv_heads, spec.head_dim)
    if device is not None and device.type != "cpu":
        return [], [
            torch.zeros(shape, dtype=spec.dtype, device=device) for _ in range(spec.num_layers)
        ]
    size = math.prod(shape) * torch.empty((), dtype=spec.dtype).element_size()
    maps: list[mmap.mmap] = []
    layers: list[torch.Tensor] = []
    for _ in range(spec.num_layers):
        mapping = mmap.mmap(
            -1, _page_up(size), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _MAP_NORESERVE
        )
        maps.append(mapping)
        layers.append(
            torch.frombuffer(mapping, dtype=spec.dtype, count=math.prod(shape)).view(shape)
        )
    return maps, layers
