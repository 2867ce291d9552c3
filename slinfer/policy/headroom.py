"""Headroom of a request (DESIGN.md §2): `h = S + TTFT_SLO + TPOT_SLO · O − now`.

`margin` scales the SLO terms (the scheduler aims at 95 % of each SLO, `PolicyConfig`);
`excused_s` shifts the deadline by model-loading time the paper excuses. With `margin=1` and no
excuse this is exactly DESIGN.md's formula. `give_up_at_s` is when a request that waits for
capacity is refused, in the simulator and live alike.
"""

from __future__ import annotations

from slinfer.policy.config import PolicyConfig
from slinfer.policy.types import RequestLike


def deadline_s(request: RequestLike, margin: float = 1.0) -> float:
    """Time by which the request's next token is due."""
    slo = request.ttft_slo_s + request.tpot_slo_s * request.output_tokens
    return request.arrival_s + request.excused_s + margin * slo


def headroom_s(request: RequestLike, now: float, margin: float = 1.0) -> float:
    return deadline_s(request, margin) - now


def give_up_at_s(request: RequestLike, resumed_at_s: float | None, config: PolicyConfig) -> float:
    """When a request waiting for capacity is refused (the artifact gateway's rule).

    At its next token's deadline (margin applied: past it, admission can no longer pass), plus
    the configured grace. A re-dispatched request gets at least one TTFT window from its
    re-dispatch to find a new place.
    """
    margin = config.slo_margin
    at = deadline_s(request, margin)
    if resumed_at_s is not None:
        at = max(at, resumed_at_s + margin * request.ttft_slo_s)
    return at + config.queue_grace_s
