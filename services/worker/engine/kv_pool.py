"""A paged KV pool: per-layer block tensors, a block allocator, and per-request block tables.

Layout of one layer: `[2, num_blocks, block_size, num_kv_heads, head_dim]` (index 0 keys,
1 values). Token `p` of a request lives in slot `table[p // block_size] * block_size +
p % block_size` of the layer viewed as `[2, num_blocks * block_size, heads, dim]`.

Blocks are zero-initialised: the attention kernel reads whole blocks, including slots past a
request's length (masked out), and masked garbage must be finite (0 * NaN is NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import KVCapacityExceeded


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

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)


class KVPool:
    def __init__(self, spec: KVSpec, num_blocks: int) -> None:
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        self.spec = spec
        self.layers: list[torch.Tensor] = self._allocate(num_blocks)
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))  # pop() gives low ids first
        self._tables: dict[str, list[int]] = {}

    @property
    def num_blocks(self) -> int:
        return self.layers[0].shape[1] if self.layers else 0

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
        return sum(t.numel() * t.element_size() for t in self.layers)

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
        """Reallocate to `num_blocks`, moving live blocks (and remapping tables) into the new
        tensors; returns the bytes now allocated. Peak memory is old + new during the copy."""
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        if self.used_blocks > num_blocks:
            raise KVCapacityExceeded(
                f"cannot shrink the KV pool to {num_blocks * self.spec.block_size} tokens: "
                f"{self.used_blocks * self.spec.block_size} token slots are in use"
            )
        live = [block for table in self._tables.values() for block in table]
        new_layers = self._allocate(num_blocks)
        if live:
            src = torch.tensor(live, dtype=torch.long)
            dst = torch.arange(len(live), dtype=torch.long)
            for old, new in zip(self.layers, new_layers, strict=True):
                new[:, dst] = old[:, src]
        remap = {old_id: new_id for new_id, old_id in enumerate(live)}
        self._tables = {rid: [remap[b] for b in table] for rid, table in self._tables.items()}
        self._free = list(range(num_blocks - 1, len(live) - 1, -1))
        self.layers = new_layers
        return self.bytes_allocated

    def _allocate(self, num_blocks: int) -> list[torch.Tensor]:
        spec = self.spec
        shape = (2, num_blocks, spec.block_size, spec.num_kv_heads, spec.head_dim)
        return [torch.zeros(shape, dtype=spec.dtype) for _ in range(spec.num_layers)]
