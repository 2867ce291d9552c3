"""Per-request sampling of the next token from one iteration's logits.

Greedy rows (temperature 0) take the argmax. Sampled rows apply temperature, then nucleus
(top_p) filtering, then draw with the request's own `torch.Generator`: a seeded request
draws the same tokens whatever its batch mates are, and no global RNG is touched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import SamplingParams


def make_generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    if seed is None:
        generator.seed()  # non-deterministic, from the OS
    else:
        generator.manual_seed(seed)
    return generator


def position_seed(seed: int, index: int) -> int:
    """The generator seed of a seeded request's token number `index`: the draws depend on
    (seed, position) alone, so a request resumed elsewhere draws what it would have drawn."""
    mixed = (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + 1) & (2**64 - 1)
    mixed ^= mixed >> 31
    return mixed & (2**63 - 1)


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero all but the smallest set of most likely tokens whose mass reaches top_p; the
    most likely token always stays. `probs` is 1-D; returns unnormalised probabilities."""
    if top_p >= 1.0:
        return probs
    sorted_probs, order = torch.sort(probs, descending=True)
    mass_before = torch.cumsum(sorted_probs, 0) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
    return torch.zeros_like(probs).scatter_(0, order, sorted_probs)


def sample_next_tokens(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator | None],
) -> list[int]:
    """`logits` is [B, vocab] (any float dtype); returns one token id per row. Raises
    ValueError when a row's logits are not finite (a model fault: the caller fails the row's
    request alone)."""
    logits = logits.float()
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("the model produced non-finite logits (inf/nan)")
    tokens = torch.argmax(logits, dim=-1).tolist()
    for row, (p, generator) in enumerate(zip(params, generators, strict=True)):
        if p.temperature == 0:
            continue
        # Shifted by the row's maximum first: a tiny temperature gives a one-hot, not inf/nan.
        row_logits = logits[row]
        probs = torch.softmax((row_logits - row_logits.max()) / p.temperature, dim=-1)
        probs = top_p_filter(probs, p.top_p)
        tokens[row] = int(torch.multinomial(probs, 1, generator=generator))
    return tokens
