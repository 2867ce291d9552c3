"""An instance with one more request, as admission imagines it (DESIGN.md §2, "shadow").

`ShadowInstance` satisfies `InstanceLike` without copying the instance: every aggregate is the
base instance's plus the request's, and the request joins the prefill queue.
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
    __slots__ = ("base", "request")

    def __init__(self, base: InstanceLike, request: RequestLike) -> None:
        self.base = base
        self.request = request

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
        return (*self.base.requests, self.request)

    @property
    def prefill_queue(self) -> Sequence[RequestLike]:
        return (*self.base.prefill_queue, self.request)

    @property
    def batch(self) -> int:
        return self.base.batch + 1

    @property
    def context_tokens(self) -> int:
        return self.base.context_tokens + self.request.input_tokens + self.request.output_tokens

    def earliest_deadline_s(self, margin: float) -> float | None:
        own = deadline_s(self.request, margin)
        base = self.base.earliest_deadline_s(margin)
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
