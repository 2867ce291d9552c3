"""What a device measures of itself for admission (DESIGN.md §2, "steady state", "Calibration").

- `PrefillShare`: ρ, the share of the device's time that prefills took over the last
  `window_s` (30 s): the load decode budgets do not see.
- `IterationRatio`: the device's observed/predicted iteration time, a moving average. Every
  prediction admission makes is multiplied by it, so a device slowed by other work is not
  overbooked and tables measured on an idle device are corrected.

Both take the time as an argument and keep no clock: the worker feeds them wall-clock
iterations, the simulator simulated ones, and both publish the same figures.
"""

from __future__ import annotations

from collections import deque

# Bounds of the calibration ratio: a single pathological iteration (a page fault storm, a
# GC pause) must not make a device look four times faster or slower than its tables.
RATIO_MIN = 0.25
RATIO_MAX = 4.0


class PrefillShare:
    """ρ over a sliding window: Σ prefill busy time in (now − window, now] / window."""

    __slots__ = ("window_s", "_spans", "_total")

    def __init__(self, window_s: float = 30.0) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = window_s
        self._spans: deque[tuple[float, float]] = deque()  # (start, end), in time order
        self._total = 0.0  # Σ (end − start) over _spans

    def record(self, start_s: float, end_s: float) -> None:
        """A prefill ran on the device from `start_s` to `end_s`."""
        if end_s <= start_s:
            return
        self._spans.append((start_s, end_s))
        self._total += end_s - start_s

    def share(self, now: float) -> float:
        """ρ at `now`, in [0, 1]. Spans are clipped to the window."""
        horizon = now - self.window_s
        spans = self._spans
        while spans and spans[0][1] <= horizon:
            start, end = spans.popleft()
            self._total -= end - start
        if not spans:
            self._total = 0.0
            return 0.0
        busy = self._total
        first_start, first_end = spans[0]
        if first_start < horizon:  # the oldest span straddles the window's edge
            busy -= horizon - first_start
        last_start, last_end = spans[-1]
        if last_end > now:  # a span reported ahead of `now` (simulated grants end later)
            busy -= last_end - max(now, last_start)
        return min(max(busy / self.window_s, 0.0), 1.0)


class IterationRatio:
    """Exponential moving average of observed / predicted iteration time.

    `predicted_s` is the table's prediction *without* the safety factor, so that the safety
    margin stays on top of the correction instead of being calibrated away.
    """

    __slots__ = ("alpha", "_value", "samples")

    def __init__(self, alpha: float = 0.05, initial: float = 1.0) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self._value = initial
        self.samples = 0

    def observe(self, observed_s: float, predicted_s: float) -> None:
        if observed_s <= 0 or predicted_s <= 0:
            return
        ratio = min(max(observed_s / predicted_s, RATIO_MIN), RATIO_MAX)
        self.samples += 1
        # The first samples replace the prior quickly; later ones move it by alpha.
        weight = max(self.alpha, 1.0 / self.samples)
        self._value += weight * (ratio - self._value)

    @property
    def value(self) -> float:
        return self._value
