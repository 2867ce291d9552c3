"""An instance with more requests, as admission imagines it (DESIGN.md §2, "shadow").

`ShadowInstance` satisfies `InstanceLike` without copying the instance: every aggregate is the
base instance's plus the added requests', and the added requests join the prefill queue (a
fresh request's prompt, or a moved request's prompt plus its tokens so far).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from slinfer.policy.headroom import deadline_s
from slinfer.policy.types import InstanceLike, InstancePhase, RequestLike

if TYPE_CHECKING:
    from slinfer.policy.model_spec import ModelSpec
    from slinfer.policy.perf_model import PerfModel


class ShadowInstance:
    __slots__ = ("base", "added")

    def __init__(self, base: InstanceLike, added: RequestLike | Sequence[RequestLike]) -> None:
        self.base = base
        self.added: tuple[RequestLike, ...] = (
            tuple(added) if isinstance(added, Sequence) else (added,)
        )

    @property
    def instance_id(self) -> str:
        return self.base.instance_id

    @property
    def model_name(self) -> str:
        return self.base.model_name

    @property
    def node_id(self) -> str:
        return self.base.node_id

    @property
    def phase(self) -> InstancePhase:
        return self.base.phase

    @property
    def requests(self) -> Sequence[RequestLike]:
        return (*self.base.requests, *self.added)

    @property
    def prefill_queue(self) -> Sequence[RequestLike]:
        return (*self.base.prefill_queue, *self.added)

    @property
    def batch(self) -> int:
        return self.base.batch + len(self.added)

    @property
    def context_tokens(self) -> int:
        extra = sum(r.input_tokens + r.output_tokens for r in self.added)
        return self.base.context_tokens + extra

    def earliest_deadline_s(self, margin: float) -> float | None:
        base = self.base.earliest_deadline_s(margin)
        own = min((deadline_s(r, margin) for r in self.added), default=None)
        if own is None:
            return base
        return own if base is None or own < base else base

    @property
    def planned_weights_bytes(self) -> int:
        return self.base.planned_weights_bytes

    @property
    def planned_kv_bytes(self) -> int:
        return self.base.planned_kv_bytes

    @property
    def kv_pool_bytes(self) -> int | None:
        return self.base.kv_pool_bytes

    @property
    def runnable(self) -> bool:
        return self.base.runnable

    @property
    def perf(self) -> PerfModel:
        return self.base.perf

    @property
    def spec(self) -> ModelSpec:
        return self.base.spec

    @property
    def tpot_slo_s(self) -> float:
        return self.base.tpot_slo_s

    @property
    def mean_output_tokens(self) -> float:
        return self.base.mean_output_tokens

    @property
    def ready_at_s(self) -> float | None:
        return self.base.ready_at_s

    @property
    def moved_at_s(self) -> float | None:
        return self.base.moved_at_s
