"""Engines replaced by the performance model (DESIGN.md §6).

A grant of n iterations runs back to back on the device. An iteration is a *prefill* of every
request awaiting one (vLLM without chunked prefill runs prefills alone; the time is the sum of
each prompt's prefill, plus the tokens so far after a preemption, as the artifact estimates
it) or else a *decode* of the whole batch, `decode(avg_ctx, batch)`. Each iteration yields one
token per participating request. The engine uses the raw profile tables (safety factor 1),
optionally with multiplicative log-normal noise from a seeded RNG, while the scheduler predicts
with the safety factor: the margin between the two is what the safety factor buys.

Requests that join during a grant wait for the next one; the grant's effects are computed when it
starts and applied when it ends (the scheduler's view lags by one grant, as a streamed one does).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import NamedTuple

from slinfer.sim.state import SimInstance, SimRequest


class Effect(NamedTuple):
    request: SimRequest
    tokens: int
    first_token_s: float | None  # end of the iteration that produced its first token here
    finish_s: float | None  # end of the iteration that produced its last token
    prefilled: bool
    lateness_s: float  # worst token lateness against the per-token deadlines (true SLOs)


@dataclass(frozen=True, slots=True)
class GrantPlan:
    instance: SimInstance
    start_s: float
    end_s: float
    effects: tuple[Effect, ...]
    decode_tokens: int


def _deadline(r: SimRequest, out_before: int) -> float:
    """Deadline of the token produced after `out_before` tokens (true SLOs, no excuse)."""
    return r.arrival_s + r.ttft_slo_s + r.tpot_slo_s * out_before


class EngineModel:
    __slots__ = ("_rng", "_sigma", "_mu")

    def __init__(self, seed: int = 0, noise_cv: float = 0.0) -> None:
        if noise_cv < 0:
            raise ValueError(f"noise_cv must be >= 0, got {noise_cv}")
        self._rng = random.Random(seed)
        self._sigma = math.sqrt(math.log1p(noise_cv * noise_cv))
        self._mu = -0.5 * self._sigma * self._sigma  # mean-one multiplier

    def _noise(self) -> float:
        if self._sigma == 0.0:
            return 1.0
        return self._rng.lognormvariate(self._mu, self._sigma)

    def plan(self, inst: SimInstance, iterations: int, now: float) -> GrantPlan:
        members = inst.requests
        if not inst.prefill:
            t, effects, tokens = self._decode(inst, members, None, iterations, now)
            return GrantPlan(inst, now, t, effects, tokens)
        # One prefill iteration for the requests awaiting it; the rest of the grant decodes.
        pending = set(map(id, inst.prefill))
        out = [r.output_tokens for r in members]
        todo = [i for i, r in enumerate(members) if id(r) in pending]
        engine = inst.engine
        cost = sum(engine.prefill_s(members[i].input_tokens + out[i]) for i in todo)
        t = now + cost * self._noise()
        prefill_effects: dict[int, Effect] = {}
        for i in todo:
            r = members[i]
            late = t - _deadline(r, out[i])
            out[i] += 1
            finish = t if out[i] >= r.target_tokens else None
            prefill_effects[i] = Effect(r, 1, t, finish, True, late)
        if iterations <= 1:
            return GrantPlan(inst, now, t, tuple(prefill_effects.values()), 0)
        end, decoded, tokens = self._decode(inst, members, out, iterations - 1, t)
        merged: dict[int, Effect] = dict(prefill_effects)
        index = {id(r): i for i, r in enumerate(members)}
        for e in decoded:
            i = index[id(e.request)]
            p = merged.get(i)
            if p is None:
                merged[i] = e
            else:
                late = max(p.lateness_s, e.lateness_s)
                merged[i] = Effect(e.request, 1 + e.tokens, p.first_token_s, e.finish_s, True, late)
        return GrantPlan(inst, now, end, tuple(merged.values()), tokens)

    def _decode(
        self,
        inst: SimInstance,
        members: list[SimRequest],
        out: list[int] | None,
        iterations: int,
        now: float,
    ) -> tuple[float, tuple[Effect, ...], int]:
        """`iterations` decode steps of every request that still has tokens to produce.

        A request with r tokens left leaves after step r; the batch and the context sum of
        each step follow from those counts without walking the batch per step.
        """
        if out is None:
            out = [r.output_tokens for r in members]
        live = [(r, o) for r, o in zip(members, out, strict=True) if o < r.target_tokens]
        fin_count = [0] * iterations
        fin_context = [0] * iterations
        batch = len(live)
        context = 0
        for r, o in live:
            base = r.input_tokens + o
            context += base
            left = r.target_tokens - o
            if left <= iterations:
                fin_count[left - 1] += 1
                fin_context[left - 1] += base + left
        decode_s = inst.engine.decode_s
        times: list[float] = []
        t = now
        tokens = 0
        noisy = self._sigma != 0.0
        for j in range(iterations):
            if batch == 0:
                break
            step = decode_s(context / batch, batch)
            t += step * self._noise() if noisy else step
            times.append(t)
            tokens += batch
            context += batch - fin_context[j]
            batch -= fin_count[j]
        ran = len(times)
        if not ran:
            return t, (), 0
        first = times[0]
        effects = []
        for r, o in live:
            left = r.target_tokens - o
            g = left if left < ran else ran
            last = times[g - 1]
            tpot = r.tpot_slo_s
            base_deadline = r.arrival_s + r.ttft_slo_s + tpot * o
            late = first - base_deadline
            late_last = last - base_deadline - tpot * (g - 1)
            if late_last > late:
                late = late_last
            effects.append(Effect(r, g, first, last if left <= ran else None, False, late))
        return t, tuple(effects), tokens
