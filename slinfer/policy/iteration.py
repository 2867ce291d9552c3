"""What one iteration of an instance costs, as the policies predict it (DESIGN.md §2, §6).

An iteration is a *prefill* of every request awaiting one (its prompt plus any tokens it
produced before a preemption, recomputed) or else a *decode* of the whole batch,
`decode(avg_ctx, batch)`; each iteration yields one token per request in it. The shadow run
of admission and the simulator's engine model both time iterations here, so that what
admission foresees is what the simulator then runs.
"""

from __future__ import annotations

from collections.abc import Iterable

from slinfer.policy.perf_model import PerfModel
from slinfer.policy.types import RequestLike


def prefill_tokens(request: RequestLike) -> int:
    """Tokens a (re)prefill computes: the prompt plus the tokens produced so far."""
    return request.input_tokens + request.output_tokens


def prefill_time_s(perf: PerfModel, tokens: Iterable[int]) -> float:
    """A prefill iteration over prompts of these lengths (each prefilled on its own)."""
    return sum(perf.prefill_s(n) for n in tokens)


def prefill_iteration_s(perf: PerfModel, queue: Iterable[RequestLike]) -> float:
    return prefill_time_s(perf, (prefill_tokens(r) for r in queue))


def decode_iteration_s(perf: PerfModel, context_tokens: int, batch: int) -> float:
    return perf.decode_s(context_tokens / batch, batch) if batch else 0.0
