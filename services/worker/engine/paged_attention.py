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

    @property
    def positions(self) -> range:
        return range(self.start, self.end)


@dataclass(frozen=True, slots=True)
class PagedBatch:
    layers: Sequence[torch.Tensor]  # the pool's per-layer tensors
    slot_mapping: torch.Tensor  # [T] pool slot of each packed token
    block_ids: torch.Tensor  # [B * max_blocks] block tables, flattened, padded with block 0
    num_seqs: int  # B
    key_len: int  # L: keys attended per request (the longest context of the batch)
    # [B, Q] index of each padded query into the packed row (padding points at 0), and [T]
    # index of each packed token into the flattened [B * Q] output; both None when the row
    # needs no padding: every request feeds one token (pure decode: B == T, Q == 1), or
    # there is a single request (B == 1, Q == T).
    query_index: torch.Tensor | None
    output_index: torch.Tensor | None
    # [B, 1, Q, L] additive mask (0 where a query may attend a key, -inf elsewhere); None for
    # a lone request, whose keys are exactly its context: a decode attends all of them, a
    # prefill from position 0 is causal.
    mask: torch.Tensor | None
    is_causal: bool  # a lone request's prefill from position 0 (Q == L)


def build_paged_batch(
    layers: Sequence[torch.Tensor], block_size: int, chunks: Sequence[SeqChunk]
) -> PagedBatch:
    """The iteration's attention metadata, built once and shared by every layer."""
    key_len = max(chunk.end for chunk in chunks)
    max_blocks = -(-key_len // block_size)
    slots: list[int] = []
    block_ids: list[int] = []
    for chunk in chunks:
        table = chunk.block_table
        slots += [table[p // block_size] * block_size + p % block_size for p in chunk.positions]
        used = table[: -(-chunk.end // block_size)]
        block_ids += used + [0] * (max_blocks - len(used))

    query_index = output_index = mask = None
    lone = len(chunks) == 1 and (chunks[0].num_new == 1 or chunks[0].start == 0)
    if len(chunks) > 1 and any(chunk.num_new != 1 for chunk in chunks):
        lengths = torch.tensor([chunk.num_new for chunk in chunks], dtype=torch.long)
        max_q = int(lengths.max())
        offsets = torch.cumsum(lengths, 0) - lengths  # start of each request in the row
        q_range = torch.arange(max_q, dtype=torch.long)
        valid = q_range[None, :] < lengths[:, None]
        query_index = torch.where(valid, offsets[:, None] + q_range[None, :], 0)
        output_index = (torch.arange(len(chunks))[:, None] * max_q + q_range[None, :])[valid]
    if not lone:
        # Padded query rows get position 0 so that they attend key 0 and stay finite.
        padded_pos = pad_sequence(
            [torch.arange(c.start, c.end, dtype=torch.long) for c in chunks],
            batch_first=True,
            padding_value=0,
        )  # [B, Q]
        key_pos = torch.arange(key_len, dtype=torch.long)
        # Key k of request b is visible to a query at position p iff k <= p; p < end_b, so
        # this also hides the slots past the request's length, including padding blocks.
        visible = (key_pos[None, None, :] <= padded_pos[:, :, None]).unsqueeze(1)
        # Additive, in the model's dtype: what SDPA would convert a boolean mask to, in every
        # layer; converted once here instead.
        mask = torch.zeros(visible.shape, dtype=layers[0].dtype).masked_fill_(
            ~visible, float("-inf")
        )
    device = layers[0].device
    if device.type != "cpu":  # CUDA pools: the metadata goes where the pool is, once
        query_index, output_index, mask = (
            None if t is None else t.to(device, non_blocking=True)
            for t in (query_index, output_index, mask)
        )
    return PagedBatch(
        layers=layers,
        slot_mapping=torch.tensor(slots, dtype=torch.long, device=device),
        block_ids=torch.tensor(block_ids, dtype=torch.long, device=device),
        num_seqs=len(chunks),
        key_len=key_len,
        query_index=query_index,
        output_index=output_index,
        mask=mask,
        is_causal=lone and chunks[0].num_new > 1,
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

    # One gather of whole blocks (K and V together): [2, B * max_blocks, block_size, ...]
    # -> [2, B, kv_heads, L, dim], trimmed to the longest context.
    num_seqs = batch.num_seqs
    kv = layer.index_select(1, batch.block_ids).view(2, num_seqs, -1, kv_heads, head_dim)
    kv = kv[:, :, : batch.key_len].transpose(2, 3)

    packed_q = query[0].transpose(0, 1)  # [T, heads, dim]
    if batch.query_index is None:  # no padding: [T] splits into [B, Q]
        queries = packed_q.view(num_seqs, -1, *packed_q.shape[1:]).transpose(1, 2)
    else:
        queries = packed_q[batch.query_index].transpose(1, 2)  # [B, heads, Q, dim]
    out = F.scaled_dot_product_attention(
        queries,
        kv[0],
        kv[1],
        attn_mask=batch.mask,
        is_causal=batch.is_causal,
        scale=scaling,
        enable_gqa=queries.shape[1] != kv_heads,
    )  # [B, heads, Q, dim]
    out = out.transpose(1, 2)  # [B, Q, heads, dim]
    if batch.output_index is None:
        packed_out = out.reshape(-1, out.shape[2], head_dim)  # [B * Q = T, heads, dim]
    else:
        packed_out = out.reshape(-1, out.shape[2], head_dim)[batch.output_index]
    return packed_out.unsqueeze(0), None  # [1, T, heads, dim]


def register() -> None:
    """Make ATTN_IMPLEMENTATION known to transformers (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, paged_attention_forward)
