"""Constants of the policies, validated once (DESIGN.md §2–4; artifact defaults).

One frozen `PolicyConfig` travels with every decision so that the live services and the
simulator decide with the same numbers.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, fields
from typing import Any


class KvScaling(enum.Enum):
    """How an instance's KV allocation follows its requests (DESIGN.md §3)."""

    FORWARD = "forward"  # forecast with Ō and L_min, watermark hysteresis
    REACTIVE = "reactive"  # baseline: grow only when full, to exactly what is needed


class Admission(enum.Enum):
    """Which admission rule decides (DESIGN.md §2; admission.py)."""

    SHADOW = "shadow"  # memory, steady state Σ slices + ρ ≤ 1, shadow run of the device
    PAPER = "paper"  # the first design: memory, decode budget, prefill-deadline EDF (Fig. 22)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Policy constants.

    - `slo_margin`: the scheduler aims at this fraction of each SLO (artifact: 0.95, its
      `TTFT_baseline = 0.5 * 0.95`, `TPOT = 0.25 * 0.95`), so that small prediction errors do not
      become misses. Attainment is always *measured* against the full SLO.
    - `l_min_tokens`: KV demand floor L_min per instance (§3; artifact 4096).
    - `watermark`: hysteresis w of KV scaling (§3; artifact 0.25); `kv_scaling`: forward
      (§3) or the reactive baseline.
    - `prior_output_tokens`: the prior of Ō, the mean output length a model is assumed to
      have before it has completed requests (one pseudo-request of this length, `OutputHistory`).
    - `retry_interval_s`: how often a request that found no capacity is tried again until its
      deadline passes (artifact gateway: 0.25 s); `queue_grace_s`: extra wait past that
      deadline before it is refused (`headroom.give_up_at_s`; 0: the SLO itself).
    - `admission`: the admission rule (§2); `shadow_tokens`: K, the tokens every request on
      the device must produce in the shadow run; `prefill_window_s`: the window of ρ.
    - `move_cooldown_s`: T_move, no instance is moved twice within it (§4).
    - `pack_after_s`, `pack_below`: T_pack and the packing threshold: a node is emptied only
      after its load stayed below `pack_below` (CPU: Σ slices + ρ; GPU: planned memory share)
      for `pack_after_s` (§4).
    """

    slo_margin: float = 0.95
    l_min_tokens: int = 4096
    watermark: float = 0.25
    kv_scaling: KvScaling = KvScaling.FORWARD
    prior_output_tokens: float = 512.0
    retry_interval_s: float = 0.25
    queue_grace_s: float = 0.0
    admission: Admission = Admission.SHADOW
    shadow_tokens: int = 4
    prefill_window_s: float = 30.0
    move_cooldown_s: float = 30.0
    pack_after_s: float = 60.0
    pack_below: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.slo_margin <= 1.0:
            raise ValueError(f"slo_margin must be in (0, 1], got {self.slo_margin}")
        if self.l_min_tokens < 0:
            raise ValueError(f"l_min_tokens must be >= 0, got {self.l_min_tokens}")
        if not 0.0 <= self.watermark <= 1.0:
            raise ValueError(f"watermark must be in [0, 1], got {self.watermark}")
        if self.queue_grace_s < 0.0:
            raise ValueError(f"queue_grace_s must be >= 0, got {self.queue_grace_s}")
        if self.prior_output_tokens < 0.0:
            raise ValueError(f"prior_output_tokens must be >= 0, got {self.prior_output_tokens}")
        if self.retry_interval_s <= 0.0:
            raise ValueError(f"retry_interval_s must be > 0, got {self.retry_interval_s}")
        if self.shadow_tokens < 1:
            raise ValueError(f"shadow_tokens must be >= 1, got {self.shadow_tokens}")
        if self.prefill_window_s <= 0.0:
            raise ValueError(f"prefill_window_s must be > 0, got {self.prefill_window_s}")
        if self.move_cooldown_s < 0.0 or self.pack_after_s < 0.0:
            raise ValueError("move_cooldown_s and pack_after_s must be >= 0")
        if not 0.0 <= self.pack_below <= 1.0:
            raise ValueError(f"pack_below must be in [0, 1], got {self.pack_below}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the scheduler publishes the config it runs with (keys.POLICY), and the
        workers' arbiters and the consolidator decide with the same numbers."""
        out = asdict(self)
        out["admission"] = self.admission.value
        out["kv_scaling"] = self.kv_scaling.value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyConfig:
        """Inverse of `to_dict`; unknown keys are ignored (a newer scheduler's extras)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "admission" in values:
            values["admission"] = Admission(values["admission"])
        if "kv_scaling" in values:
            values["kv_scaling"] = KvScaling(values["kv_scaling"])
        return cls(**values)


DEFAULT_CONFIG = PolicyConfig()
