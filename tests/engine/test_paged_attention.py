"""The packed-batch attention function against a dense reference, path by path: a lone
request's decode (no mask) and prefill (causal), and a mixed batch (mask)."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from slinfer.services.worker.engine.paged_attention import (
    BATCH_KWARG,
    SeqChunk,
    build_paged_batch,
    paged_attention_forward,
)

HEADS, KV_HEADS, DIM, BLOCK, NUM_BLOCKS = 4, 2, 8, 4, 32


class FakeAttention(torch.nn.Module):
    layer_idx = 0


def run(chunks: list[tuple[int, int]], seed: int = 0):
    """Feed `chunks` ((start, end) per request) through the paged function, its history
    already in the pool; returns (paged output, dense reference, batch metadata)."""
    gen = torch.Generator().manual_seed(seed)
    free = list(range(NUM_BLOCKS))
    random.Random(seed).shuffle(free)  # scattered blocks, as after churn
    layer = torch.zeros(2, NUM_BLOCKS, BLOCK, KV_HEADS, DIM)
    seq_chunks, keys, values, queries = [], [], [], []
    for start, end in chunks:
        table = [free.pop() for _ in range(-(-end // BLOCK))]
        k = torch.randn(end, KV_HEADS, DIM, generator=gen)
        v = torch.randn(end, KV_HEADS, DIM, generator=gen)
        for p in range(start):  # the cached history
            layer[:, table[p // BLOCK], p % BLOCK] = torch.stack([k[p], v[p]])
        seq_chunks.append(SeqChunk(table, start, end))
        keys.append(k)
        values.append(v)
        queries.append(torch.randn(end - start, HEADS, DIM, generator=gen))
    batch = build_paged_batch([layer], BLOCK, seq_chunks)
    new_k = torch.cat([k[s:] for k, (s, _) in zip(keys, chunks, strict=True)])
    new_v = torch.cat([v[s:] for v, (s, _) in zip(values, chunks, strict=True)])
    out, _ = paged_attention_forward(
        FakeAttention(),
        torch.cat(queries).transpose(0, 1).unsqueeze(0),  # [1, heads, T, dim]
        new_k.transpose(0, 1).unsqueeze(0),
        new_v.transpose(0, 1).unsqueeze(0),
        None,
        scaling=DIM**-0.5,
        **{BATCH_KWARG: batch},
    )
    reference = []
    for (start, end), q, k, v in zip(chunks, queries, keys, values, strict=True):
        visible = torch.arange(end)[None, :] <= torch.arange(start, end)[:, None]
        o = F.scaled_dot_product_attention(
            q.transpose(0, 1),
            k.transpose(0, 1).repeat_interleave(HEADS // KV_HEADS, 0),
            v.transpose(0, 1).repeat_interleave(HEADS // KV_HEADS, 0),
            attn_mask=visible,
        )
        reference.append(o.transpose(0, 1))
    return out[0], torch.cat(reference), batch


@pytest.mark.parametrize(
    ("chunks", "masked", "causal"),
    [
        ([(37, 38)], False, False),  # lone decode: keys are exactly its context
        ([(0, 13)], False, True),  # lone prefill
        ([(9, 14)], True, False),  # lone prefill after a cached prefix
        ([(37, 38), (5, 6), (16, 17)], True, False),  # decodes of different lengths
        ([(20, 21), (0, 11), (3, 4), (0, 2)], True, False),  # prefills and decodes mixed
    ],
)
def test_paged_attention_equals_dense_attention(chunks, masked, causal) -> None:
    out, reference, batch = run(chunks)
    assert (batch.mask is not None) == masked and batch.is_causal == causal
    assert batch.key_len == max(end for _, end in chunks)
    unpadded = len(chunks) == 1 or all(end - start == 1 for start, end in chunks)
    assert (batch.query_index is None) == unpadded  # no query gather without padding
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)


def test_new_keys_land_in_their_slots() -> None:
    _, _, batch = run([(6, 9), (0, 5)], seed=3)
    layer = batch.layers[0].view(2, NUM_BLOCKS * BLOCK, KV_HEADS, DIM)
    written = layer[:, batch.slot_mapping]
    assert written.abs().sum(dim=(2, 3)).gt(0).all()  # every new token's K and V was written
    assert len(set(batch.slot_mapping.tolist())) == 3 + 5
