"""Paged attention for Hugging Face model definitions, over a flattened (packed) batch.

One iteration feeds the model a single packed row of T tokens: every request's new tokens
(a whole prompt for a prefill, one token for a decode) one after another, with per-token
position ids. Everything except attention is position-wise, so the HF modules run on the
packed row unchanged. Attention is this module's function, registered in transformers'
`AttentionInterface` and selected with `attn_implementation=ATTN_IMPLEMENTATION`; per layer it

1. writes the row's new keys/values into their pool slots (`slot_mapping`),
2. gathers each request's whole blocks into a padded `[B, heads, L, dim]` batch,
3. scatters the packed queries into a padded `[B, heads, Q, dim]` batch,
4. runs one `scaled_dot_product_attention` with a causal-and-length mask, and
5. packs the outputs back into the row.

The per-iteration metadata travels through the model's forward kwargs (`paged_batch=`), so
instances of different models in one process share nothing: the registration is of a pure
function.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

ATTN_IMPLEMENTATION = "slinfer_paged"
BATCH_KWARG = "paged_batch"


@dataclass(frozen=True, slots=True)
class SeqChunk:
    """The tokens one request feeds into this iteration: positions [start, end)."""

    block_table: list[int]
    start: int
    end: int

    @property
    def num_new(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class PagedBatch:
    layers: Sequence[torch.Tensor]  # the pool's per-layer tensors
    slot_mapping: torch.Tensor  # [T] pool slot of each packed token
    block_tables: torch.Tensor  # [B, max_blocks], padded with block 0 (masked)
    # [B, Q] index of each padded query into the packed row (padding points at 0), and [T]
    # index of each packed token into the flattened [B * Q] output; both None when every
    # request feeds exactly one token (pure decode: B == T and Q == 1).
    query_index: torch.Tensor | None
    output_index: torch.Tensor | None
    mask: torch.Tensor  # [B, 1, Q, L] bool, True where a query may attend a key


def build_paged_batch(
    layers: Sequence[torch.Tensor], block_size: int, chunks: Sequence[SeqChunk]
) -> PagedBatch:
    slots, tables, query_pos = [], [], []
    for chunk in chunks:
        table = torch.tensor(chunk.block_table, dtype=torch.long)
        positions = torch.arange(chunk.start, chunk.end, dtype=torch.long)
        slots.append(table[positions // block_size] * block_size + positions % block_size)
        tables.append(table[: -(-chunk.end // block_size)])
        query_pos.append(positions)
    block_tables = pad_sequence(tables, batch_first=True, padding_value=0)
    # Padded query rows get position 0 so that they attend key 0 and stay finite.
    padded_pos = pad_sequence(query_pos, batch_first=True, padding_value=0)  # [B, Q]
    key_pos = torch.arange(block_tables.shape[1] * block_size, dtype=torch.long)
    # Key k of request b is visible to a query at position p iff k <= p; p < end_b, so this
    # also hides the slots past the request's length, including the padding blocks.
    mask = (key_pos[None, None, :] <= padded_pos[:, :, None]).unsqueeze(1)

    query_index = output_index = None
    if any(chunk.num_new != 1 for chunk in chunks):
        lengths = torch.tensor([chunk.num_new for chunk in chunks], dtype=torch.long)
        max_q = int(lengths.max())
        offsets = torch.cumsum(lengths, 0) - lengths  # start of each request in the row
        q_range = torch.arange(max_q, dtype=torch.long)
        valid = q_range[None, :] < lengths[:, None]
        query_index = torch.where(valid, offsets[:, None] + q_range[None, :], 0)
        output_index = (torch.arange(len(chunks))[:, None] * max_q + q_range[None, :])[valid]
    return PagedBatch(
        layers=layers,
        slot_mapping=torch.cat(slots),
        block_tables=block_tables,
        query_index=query_index,
        output_index=output_index,
        mask=mask,
    )


def paged_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,  # [1, heads, T, dim]
    key: torch.Tensor,  # [1, kv_heads, T, dim]
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    batch: PagedBatch | None = kwargs.get(BATCH_KWARG)
    if batch is None:
        raise RuntimeError(f"{ATTN_IMPLEMENTATION} attention needs the {BATCH_KWARG}= kwarg")
    layer_idx = int(module.layer_idx)  # type: ignore[arg-type]  # set by every HF attention
    layer = batch.layers[layer_idx]  # [2, blocks, block_size, kv_heads, dim]
    _, num_blocks, block_size, kv_heads, head_dim = layer.shape
    flat = layer.view(2, num_blocks * block_size, kv_heads, head_dim)
    flat[0].index_copy_(0, batch.slot_mapping, key[0].transpose(0, 1))
    flat[1].index_copy_(0, batch.slot_mapping, value[0].transpose(0, 1))

    num_seqs, max_blocks = batch.block_tables.shape
    # [B, max_blocks, block_size, kv_heads, dim] -> [B, kv_heads, L, dim]
    keys = layer[0][batch.block_tables].view(num_seqs, -1, kv_heads, head_dim).transpose(1, 2)
    values = layer[1][batch.block_tables].view(num_seqs, -1, kv_heads, head_dim).transpose(1, 2)

    packed_q = query[0].transpose(0, 1)  # [T, heads, dim]
    if batch.query_index is None:
        queries = packed_q.unsqueeze(2)  # [B, heads, 1, dim]
    else:
        queries = packed_q[batch.query_index].transpose(1, 2)  # [B, heads, Q, dim]
    out = F.scaled_dot_product_attention(
        queries,
        keys,
        values,
        attn_mask=batch.mask,
        scale=scaling,
        enable_gqa=queries.shape[1] != kv_heads,
    )  # [B, heads, Q, dim]
    out = out.transpose(1, 2)  # [B, Q, heads, dim]
    if batch.output_index is None:
        packed_out = out.reshape(num_seqs, out.shape[2], head_dim)
    else:
        packed_out = out.reshape(-1, out.shape[2], head_dim)[batch.output_index]
    return packed_out.unsqueeze(0), None  # [1, T, heads, dim]


def register() -> None:
    """Make ATTN_IMPLEMENTATION known to transformers (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, paged_attention_forward)
