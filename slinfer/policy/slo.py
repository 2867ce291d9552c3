"""Per-request SLOs (DESIGN.md §2, "SLOs").

TPOT 0.25 s; TTFT `max(0.5 s, input_tokens / 512 tok/s)` capped at 8 s (artifact defaults,
overridable per model).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Slo:
    ttft_s: float
    tpot_s: float


@dataclass(frozen=True, slots=True)
class SloPolicy:
    """How a model's SLO depends on the input length."""

    tpot_s: float = 0.25
    ttft_floor_s: float = 0.5
    ttft_tokens_per_s: float = 512.0
    ttft_cap_s: float = 8.0

    def __post_init__(self) -> None:
        if self.tpot_s <= 0 or self.ttft_floor_s <= 0 or self.ttft_tokens_per_s <= 0:
            raise ValueError("SLO times and the TTFT token rate must be positive")
        if self.ttft_cap_s < self.ttft_floor_s:
            raise ValueError(
                f"ttft_cap_s ({self.ttft_cap_s}) must be >= ttft_floor_s ({self.ttft_floor_s})"
            )

    def ttft_s(self, input_tokens: int) -> float:
        return min(max(self.ttft_floor_s, input_tokens / self.ttft_tokens_per_s), self.ttft_cap_s)

    def for_input(self, input_tokens: int) -> Slo:
        return Slo(ttft_s=self.ttft_s(input_tokens), tpot_s=self.tpot_s)


DEFAULT_SLO = SloPolicy()
