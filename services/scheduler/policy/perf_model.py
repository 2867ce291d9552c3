"""Performance model: iteration latency from a measured table (DESIGN.md §2, "Performance model").

- prefill time: linear interpolation over input length;
- decode time: 2-D linear interpolation over average context length (outer) and batch size
  (inner);
- below the first grid point the first value is used (latency does not fall under it);
  past the last grid point the value is extrapolated linearly. `Extrapolation.PROPORTIONAL`
  (default, as the artifact's `power_estimator`) extends the line through the origin and the
  last point, i.e. time grows in proportion (a saturated device); `Extrapolation.LAST_SEGMENT`
  extends the last segment's slope;
- every prediction is multiplied by a safety factor (artifact: 1.05 GPU, 1.1 CPU).

Tables come from `../shared/profiles/slinfer_hardware_profiles.json` (simulator) or from a live
worker's own measurement (same shape).
"""

from __future__ import annotations

import enum
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from slinfer.policy.errors import InvalidProfile, ProfileNotFound
from slinfer.policy.types import DeviceKind

DEFAULT_SAFETY: Mapping[DeviceKind, float] = {DeviceKind.GPU: 1.05, DeviceKind.CPU: 1.1}


class Extrapolation(enum.Enum):
    PROPORTIONAL = "proportional"
    LAST_SEGMENT = "last_segment"


@dataclass(frozen=True, slots=True)
class Curve:
    """A piecewise-linear curve y(x) over ascending grid points."""

    xs: tuple[float, ...]
    ys: tuple[float, ...]

    @classmethod
    def from_pairs(cls, pairs: Sequence[Sequence[float]]) -> Curve:
        if not pairs:
            raise InvalidProfile("a latency curve needs at least one point")
        xs = tuple(float(p[0]) for p in pairs)
        ys = tuple(float(p[1]) for p in pairs)
        if any(b <= a for a, b in zip(xs, xs[1:], strict=False)) or xs[0] <= 0:
            raise InvalidProfile(f"grid points must be positive and strictly ascending: {xs}")
        if any(y < 0 for y in ys):
            raise InvalidProfile(f"latencies must be >= 0: {ys}")
        return cls(xs, ys)

    def at(self, x: float, mode: Extrapolation) -> float:
        xs, ys = self.xs, self.ys
        if x <= xs[0]:
            return ys[0]
        last = len(xs) - 1
        if x >= xs[last]:
            if mode is Extrapolation.PROPORTIONAL or last == 0:
                return ys[last] * x / xs[last]
            slope = (ys[last] - ys[last - 1]) / (xs[last] - xs[last - 1])
            return ys[last] + slope * (x - xs[last])
        i = bisect_left(xs, x)
        x0, x1 = xs[i - 1], xs[i]
        y0 = ys[i - 1]
        return y0 + (ys[i] - y0) * (x - x0) / (x1 - x0)


def _lerp(x0: float, y0: float, x1: float, y1: float, x: float) -> float:
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


@dataclass(frozen=True, slots=True)
class PerfModel:
    """Predicts iteration latency of one model on one kind of device.

    `safety` multiplies every prediction; the simulator's engine uses `safety=1.0` on the same
    tables so that the scheduler predicts conservatively against "measured" behaviour.
    """

    prefill: Curve
    decode_ctx: tuple[float, ...]
    decode_rows: tuple[Curve, ...]
    safety: float = 1.0
    mode: Extrapolation = Extrapolation.PROPORTIONAL

    def __post_init__(self) -> None:
        if self.safety <= 0:
            raise InvalidProfile(f"safety factor must be > 0, got {self.safety}")
        if len(self.decode_ctx) != len(self.decode_rows) or not self.decode_rows:
            raise InvalidProfile("decode table needs one batch curve per context length")
        ctx = self.decode_ctx
        if any(b <= a for a, b in zip(ctx, ctx[1:], strict=False)) or ctx[0] <= 0:
            raise InvalidProfile(f"decode context lengths must ascend: {ctx}")

    @classmethod
    def from_tables(
        cls,
        prefill_ms: Sequence[Sequence[float]],
        decode_ms: Sequence[tuple[float, Sequence[Sequence[float]]]],
        safety: float = 1.0,
        mode: Extrapolation = Extrapolation.PROPORTIONAL,
    ) -> PerfModel:
        """Build from `[[input_tokens, ms], ...]` and `[[avg_ctx, [[batch, ms], ...]], ...]`."""
        rows = tuple(Curve.from_pairs(row) for _, row in decode_ms)
        ctx = tuple(float(c) for c, _ in decode_ms)
        return cls(Curve.from_pairs(prefill_ms), ctx, rows, safety, mode)

    @classmethod
    def from_profile(
        cls,
        profile_json: Mapping[str, Any],
        model: str,
        device_kind: DeviceKind,
        label: str,
        safety_factor: float | None = None,
        mode: Extrapolation = Extrapolation.PROPORTIONAL,
    ) -> PerfModel:
        """Build from the shared profiles file (`models.<model>.<kind>.<label>`)."""
        try:
            table = profile_json["models"][model][device_kind.value][label]
        except KeyError as err:
            raise ProfileNotFound(f"no profile for {model} on {device_kind.value}/{label}") from err
        safety = DEFAULT_SAFETY[device_kind] if safety_factor is None else safety_factor
        return cls.from_tables(table["prefill_ms"], table["decode_ms"], safety, mode)

    def with_safety(self, safety: float) -> PerfModel:
        return PerfModel(self.prefill, self.decode_ctx, self.decode_rows, safety, self.mode)

    def prefill_ms(self, input_tokens: float) -> float:
        return self.prefill.at(input_tokens, self.mode) * self.safety

    def decode_ms(self, avg_context_tokens: float, batch: float) -> float:
        ctx, rows, mode = self.decode_ctx, self.decode_rows, self.mode
        last = len(ctx) - 1
        if avg_context_tokens <= ctx[0]:
            y = rows[0].at(batch, mode)
        elif avg_context_tokens >= ctx[last]:
            y_last = rows[last].at(batch, mode)
            if mode is Extrapolation.PROPORTIONAL or last == 0:
                y = y_last * avg_context_tokens / ctx[last]
            else:
                y_prev = rows[last - 1].at(batch, mode)
                y = _lerp(ctx[last - 1], y_prev, ctx[last], y_last, avg_context_tokens)
        else:
            i = bisect_left(ctx, avg_context_tokens)
            y0 = rows[i - 1].at(batch, mode)
            y1 = rows[i].at(batch, mode)
            y = _lerp(ctx[i - 1], y0, ctx[i], y1, avg_context_tokens)
        return y * self.safety

    def prefill_s(self, input_tokens: float) -> float:
        return self.prefill_ms(input_tokens) / 1000.0

    def decode_s(self, avg_context_tokens: float, batch: float) -> float:
        return self.decode_ms(avg_context_tokens, batch) / 1000.0
