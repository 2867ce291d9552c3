"""Constants of the policies, validated once (DESIGN.md §2–4; artifact defaults).

One frozen `PolicyConfig` travels with every decision so that the live services and the
simulator decide with the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Policy constants.

    - `slo_margin`: the scheduler aims at this fraction of each SLO (artifact: 0.95, its
      `TTFT_baseline = 0.5 * 0.95`, `TPOT = 0.25 * 0.95`), so that small prediction errors do not
      become misses. Attainment is always *measured* against the full SLO.
    - `l_min_tokens`: KV demand floor L_min per instance (§3; artifact 4096).
    - `watermark`: hysteresis w of KV scaling (§3; artifact 0.25).
    - `retry_interval_s`: how often a request that found no capacity is tried again until its
      deadline passes (artifact gateway: 0.25 s).
    - `prefill_on_leftover`: an extension, off by default (DESIGN.md §2 checks prefills as if
      they had the device to themselves). When on, the prefill EDF simulation of check (3)
      runs on the share of the device that decoding leaves, `1 − Σ slices`: prefill time is
      stretched by `1 / (1 − Σ slices)`, so that decode budget and prefills together never
      overbook a device (see docs/EVALUATION.md for why it matters on CPUs).
    """

    slo_margin: float = 0.95
    l_min_tokens: int = 4096
    watermark: float = 0.25
    retry_interval_s: float = 0.25
    prefill_on_leftover: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.slo_margin <= 1.0:
            raise ValueError(f"slo_margin must be in (0, 1], got {self.slo_margin}")
        if self.l_min_tokens < 0:
            raise ValueError(f"l_min_tokens must be >= 0, got {self.l_min_tokens}")
        if not 0.0 <= self.watermark <= 1.0:
            raise ValueError(f"watermark must be in [0, 1], got {self.watermark}")
        if self.retry_interval_s <= 0.0:
            raise ValueError(f"retry_interval_s must be > 0, got {self.retry_interval_s}")


DEFAULT_CONFIG = PolicyConfig()
