"""The scheduler's dispatch settings (flags of `python -m slinfer.services.scheduler`)."""

from __future__ import annotations

from dataclasses import dataclass

from slinfer.policy import PolicyConfig, SystemName
from slinfer.policy.kv_scaling import KvScaling, KvScalingConfig


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    system: SystemName = SystemName.SLINFER
    # Extra wait beyond a request's TTFT deadline before it is refused (0: the SLO itself).
    queue_grace_s: float = 0.0
    default_kv_capacity_tokens: int = 4096
    l_min_tokens: int = 1024
    # The admission variant docs/EVALUATION.md recommends for CPUs (prefills checked on the
    # device share decoding leaves); off: DESIGN.md §2 exactly.
    prefill_on_leftover: bool = False
    prior_output_tokens: float = 128.0
    # KV scaling through the memory service (DESIGN.md §3): forward-looking with watermark w,
    # or the reactive baseline (grow only when full) for docs/EVALUATION.md's comparison.
    kv_scaling: KvScaling = KvScaling.FORWARD
    watermark: float = 0.25
    load_timeout_s: float = 300.0
    rpc_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.queue_grace_s < 0 or self.load_timeout_s <= 0:
            raise ValueError("queue_grace_s must be >= 0 and load_timeout_s > 0")
        if self.default_kv_capacity_tokens <= 0 or self.l_min_tokens < 0:
            raise ValueError("default_kv_capacity_tokens > 0 and l_min_tokens >= 0 required")

    @property
    def kv_config(self) -> KvScalingConfig:
        return KvScalingConfig(self.kv_scaling, self.l_min_tokens, self.watermark)

    @property
    def policy(self) -> PolicyConfig:
        return PolicyConfig(
            l_min_tokens=self.l_min_tokens, prefill_on_leftover=self.prefill_on_leftover
        )
