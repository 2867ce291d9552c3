"""Admission protects what it admits: the TTFT the clients get tightens the margin it aims at.

The policy core admits a request when its model of the devices (measured tables, the device's
calibration, DESIGN.md §2) says every request there keeps its SLO, aiming at `slo_margin` of
each SLO. What the model does not see — the gateway's and the workers' own processing of many
streams at once, a machine shared with other work — shows up as first tokens later than the
model said. This is the live driver's feedback on it: for every admitted request's first
token, its TTFT (gateway arrival to first token, load excused) against the TTFT it was aimed
at. Late first tokens shrink the margin admission decides with (multiplicatively, at once);
early ones let it grow back slowly (to the configured margin, never above). A burst after a
period of late tokens is then admitted on the tighter margin, and what is not admitted is
refused within its (equally tightened) deadline. The simulator has no such overhead and
decides with the configured margin.
"""

from __future__ import annotations

import time
from dataclasses import replace

from slinfer.policy import PolicyConfig
from slinfer.services.scheduler import metrics

FLOOR = 0.5  # never aim below half the configured margin: late tokens never stop admission
RECOVERY = 1.01  # per early first token
RECOVERY_PER_S = 1.01  # and with time: a quiet system goes back to the configured margin
SLACK = 0.6  # "early": the TTFT was under this fraction of the aim


class SloGuard:
    def __init__(self, policy: PolicyConfig) -> None:
        self.base = policy
        self.factor = 1.0
        self._policy = policy
        self._at = time.monotonic()

    @property
    def policy(self) -> PolicyConfig:
        """The policy to decide with now: the configured one, with the margin tightened by
        what the last first tokens showed."""
        if self.factor < 1.0:
            now = time.monotonic()
            self._set(self.factor * RECOVERY_PER_S ** (now - self._at))
        return self._policy

    @property
    def margin(self) -> float:
        return self.base.slo_margin * self.factor

    def first_token(self, ttft_s: float, ttft_slo_s: float) -> None:
        """An admitted request's first token came `ttft_s` after its arrival (load
        excused); it was aimed at `margin × ttft_slo_s`."""
        if ttft_slo_s <= 0:
            return
        ratio = ttft_s / (self.base.slo_margin * ttft_slo_s)
        if ratio > 1.0:
            self._set(self.factor / ratio**0.5)
        elif ratio < SLACK:
            self._set(self.factor * RECOVERY)

    def _set(self, factor: float) -> None:
        self.factor = min(1.0, max(FLOOR, factor))
        self._at = time.monotonic()
        self._policy = (
            self.base if self.factor >= 1.0 else replace(self.base, slo_margin=self.margin)
        )
        metrics.SLO_MARGIN.set(self.margin)
