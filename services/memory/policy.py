"""Forward-looking memory scaling (DESIGN.md §3): KV demand, watermark, per-node ledger.

- `kv_demand`: `C · max(Σ_r (I_r + max(O_r, Ō)), L_min)`, rounded up to whole KV blocks.
- `watermark_target`: hysteresis w; scale up when demand exceeds the allocation, scale down
  when `demand·(1+w) < allocation/(1+w)`.
- `Ledger` (ledger.py, re-exported here): the per-node state machine of *planned* and
  *actual* footprints, with per-instance revisions and a FIFO of deferred increases.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from slinfer.policy.ledger import (
    Approval,
    Footprint,
    Ledger,
    LedgerError,
    LedgerOp,
    LedgerOutcome,
    LedgerRequest,
    LedgerStatus,
)

if TYPE_CHECKING:  # the memory service must not import the scheduler at run time
    from slinfer.policy.types import RequestLike


def kv_demand_tokens(
    requests: Iterable[RequestLike], mean_output_tokens: float, l_min_tokens: int
) -> int:
    """`max(Σ_r (I_r + max(O_r, Ō)), L_min)` in tokens."""
    total = 0.0
    for r in requests:
        out = r.output_tokens
        total += r.input_tokens + (out if out > mean_output_tokens else mean_output_tokens)
    return max(math.ceil(total), l_min_tokens)


def kv_demand(
    requests: Iterable[RequestLike],
    mean_output_tokens: float,
    kv_bytes_per_token: int,
    l_min_tokens: int = 4096,
    block_tokens: int = 1,
) -> int:
    """Predicted KV bytes of an instance, rounded up to whole blocks of `block_tokens`."""
    tokens = kv_demand_tokens(requests, mean_output_tokens, l_min_tokens)
    blocks = math.ceil(tokens / block_tokens)
    return blocks * block_tokens * kv_bytes_per_token


def engine_need_bytes(
    context_tokens: int, batch: int, kv_bytes_per_token: int, block_tokens: int = 1
) -> int:
    """KV an engine needs for its next iteration (every request grows by one token).

    The demand asked of the ledger is never below this: when outputs outgrow Ō the forecast
    equals current use, and the engine still needs room for the next token.
    """
    tokens = context_tokens + batch
    return math.ceil(tokens / block_tokens) * block_tokens * kv_bytes_per_token


def _round_up(value: float, unit: int) -> int:
    return math.ceil(value / unit) * unit if unit > 1 else math.ceil(value)


def watermark_target(
    demand_bytes: int,
    allocated_bytes: int,
    node_free_bytes: int,
    watermark: float = 0.25,
    block_bytes: int = 1,
) -> int | None:
    """New KV allocation, or None to keep the current one.

    Up when `demand > allocation`: to `min(demand·(1+w), demand + free)`, where *free* is the
    node memory left once the demand itself is granted (`node_free_bytes` is capacity minus
    the node's planned total, which includes this allocation); so the new allocation never
    exceeds `allocation + node_free_bytes`. If even the demand does not fit, the allocation
    grows as far as the node allows. Down when `demand·(1+w) < allocation/(1+w)`: to
    `demand·(1+w)`. Targets are rounded up to whole blocks (but never past what fits).
    """
    w = watermark
    if demand_bytes > allocated_bytes:
        ceiling = allocated_bytes + max(node_free_bytes, 0)
        ceiling -= ceiling % block_bytes
        target = min(_round_up(demand_bytes * (1 + w), block_bytes), ceiling)
        return target if target > allocated_bytes else None
    if demand_bytes * (1 + w) < allocated_bytes / (1 + w):
        target = _round_up(demand_bytes * (1 + w), block_bytes)
        return target if target < allocated_bytes else None
    return None


def watermark_may_move(
    context_tokens: int,
    batch: int,
    mean_output_tokens: float,
    allocated_bytes: int,
    kv_bytes_per_token: int,
    l_min_tokens: int = 4096,
    watermark: float = 0.25,
    block_tokens: int = 1,
) -> bool:
    """Cheap O(1) pre-check: False guarantees that `watermark_target` returns None for the
    instance's demand (the larger of `kv_demand` and `engine_need_bytes`).

    Bounds: `context ≤ Σ (I + max(O, Ō)) ≤ context + batch·Ō`, and the engine need is
    `context + batch`; rounding adds less than one block.
    """
    upper = max(l_min_tokens, context_tokens + batch * max(mean_output_tokens, 1.0))
    upper_bytes = (upper + block_tokens) * kv_bytes_per_token
    lower_bytes = max(l_min_tokens, context_tokens) * kv_bytes_per_token
    may_grow = upper_bytes > allocated_bytes
    may_shrink = lower_bytes * (1 + watermark) ** 2 < allocated_bytes
    return may_grow or may_shrink


class KvScaling(enum.Enum):
    """How an instance's KV allocation follows its requests (the scheduler's flag)."""

    FORWARD = "forward"  # DESIGN.md §3: forecast with Ō and L_min, watermark hysteresis
    REACTIVE = "reactive"  # baseline: grow only when full, to exactly what is needed; no forecast


@dataclass(frozen=True, slots=True)
class KvScalingConfig:
    mode: KvScaling = KvScaling.FORWARD
    l_min_tokens: int = 1024
    watermark: float = 0.25

    def __post_init__(self) -> None:
        if self.l_min_tokens < 0 or self.watermark < 0:
            raise ValueError("l_min_tokens and watermark must be >= 0")


@dataclass(frozen=True, slots=True)
class KvAllocation:
    """One instance's KV as the ledger has it, and the room left on its node."""

    kv_bytes_per_token: int
    block_tokens: int
    allocated_bytes: int  # the ledger's planned KV of the instance
    node_free_bytes: int  # node capacity minus the node's planned total


def plan_kv(
    requests: Iterable[RequestLike],
    mean_output_tokens: float,
    alloc: KvAllocation,
    config: KvScalingConfig,
) -> int | None:
    """The KV allocation to ask the ledger for, or None to keep the current one.

    FORWARD: demand = max(kv_demand (Ō, L_min), engine need), moved by `watermark_target`.
    REACTIVE: demand = engine need only (current context + one token each), watermark 0: the
    allocation grows when it is full and shrinks as soon as requests leave.
    """
    reqs = list(requests)
    bpt, block = alloc.kv_bytes_per_token, alloc.block_tokens
    context = sum(r.input_tokens + r.output_tokens for r in reqs)
    need = engine_need_bytes(context, len(reqs), bpt, block) if reqs else 0
    if config.mode is KvScaling.REACTIVE:
        demand, w = need, 0.0
    else:
        forecast = kv_demand(reqs, mean_output_tokens, bpt, config.l_min_tokens, block)
        demand, w = max(forecast, need), config.watermark
    return watermark_target(demand, alloc.allocated_bytes, alloc.node_free_bytes, w, block * bpt)


@dataclass(slots=True)
class OutputHistory:
    """Ō per model: running mean of completed output lengths, with a prior of `prior_weight`
    pseudo-requests of `prior_tokens` so that a model with no history is not under-provisioned.
    """

    prior_tokens: float = 512.0
    prior_weight: float = 1.0
    total_tokens: float = 0.0
    count: int = 0

    def observe(self, output_tokens: int) -> None:
        self.total_tokens += output_tokens
        self.count += 1

    @property
    def mean_tokens(self) -> float:
        weight = self.prior_weight + self.count
        return (self.prior_tokens * self.prior_weight + self.total_tokens) / weight


__all__ = [
    "Approval",
    "Footprint",
    "Ledger",
    "LedgerError",
    "LedgerOp",
    "LedgerOutcome",
    "LedgerRequest",
    "LedgerStatus",
    "KvAllocation",
    "KvScaling",
    "KvScalingConfig",
    "OutputHistory",
    "engine_need_bytes",
    "kv_demand",
    "kv_demand_tokens",
    "plan_kv",
    "watermark_may_move",
    "watermark_target",
]
