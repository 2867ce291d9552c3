"""Headroom of a request (DESIGN.md §2): `h = S + TTFT_SLO + TPOT_SLO · O − now`.

`margin` scales the SLO terms (the scheduler aims at 95 % of each SLO, `PolicyConfig`);
`excused_s` shifts the deadline by model-loading time the paper excuses. With `margin=1` and no
excuse this is exactly DESIGN.md's formula.
"""

from __future__ import annotations

from slinfer.policy.types import RequestLike


def deadline_s(request: RequestLike, margin: float = 1.0) -> float:
    """Time by which the request's next token is due."""
    slo = request.ttft_slo_s + request.tpot_slo_s * request.output_tokens
    return request.arrival_s + request.excused_s + margin * slo


def headroom_s(request: RequestLike, now: float, margin: float = 1.0) -> float:
    return deadline_s(request, margin) - now
