"""The shadow run of admission (DESIGN.md §2, check 3).

A copy of the device — its resident instances with their batches, pending prefills and
per-token deadlines, the requests under test added — is run forward grant by grant in the
order the workers' `Arbiter` grants (its `order_key`: earliest deadline, ties in device order;
GPU decode grants of several iterations), with predicted iteration times (iteration.py),
until every request under test has its first token and every request on the device has
produced K more tokens. No token may pass its deadline `S + excused + m·(TTFT + TPOT·O)`.

The K tokens are a window: once the requests under test have their first token at t_f, a
request whose next token is not due before t_f + K·m·TPOT (it runs far ahead of its
schedule, so the arbiter would not serve it within the window anyway) needs no more
tokens. Without this, a request minutes ahead of schedule would make the run simulate those
minutes of the device.

- An instance still loading joins at its predicted ready time. For a fresh request the wait
  is excused (as the paper counts TTFT, and as the live scheduler adds it to `excused_s`); for
  a request moved by a preemption it is not (DESIGN.md §4: the load time counts against it).
  A request already waiting on the loading instance has its whole wait excused, from its
  arrival to the ready time (both drivers add ready − attach to `excused_s` when the load
  ends), not only what remains of it from now: otherwise a second request for a model whose
  first instance is loading would find the first request's deadline before the ready time
  and be refused.
- A request that is already late when the run starts (the device fell behind before this
  decision, or a re-dispatched request lost time to its preemption) is held to keeping pace
  from now on: its next token within m·TPOT of the start (m·TTFT for a (re)prefill), the
  following ones m·TPOT apart. Otherwise one slow iteration would block every admission on
  the device until the request finished. A fresh request is never late (it is refused once
  its first token's deadline has passed: `headroom.give_up_at_s`).
- Requests are assumed to keep producing (their lengths are unknown): conservative.

Cost: copies are ordered in a heap by the arbiter's key; the decoders of one instance advance
together, so an instance keeps only their earliest deadline, which moves by m·TPOT per step;
a decode step's time is linear in the context over the run's few tokens. A run is
O(requests + grants · log instances) (bench/shadow_run.py measures it).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from slinfer.policy.arbiter import Arbiter
from slinfer.policy.config import PolicyConfig
from slinfer.policy.iteration import prefill_time_s, prefill_tokens
from slinfer.policy.model_spec import ModelSpec
from slinfer.policy.perf_model import PerfModel
from slinfer.policy.types import DeviceKind, DeviceLike, InstanceLike, InstancePhase, RequestLike

# A guard against pathological inputs: a run always ends (every grant moves some deadline
# forward, and the window closes once the requests under test have their first token), but
# one that has not ended after this many iterations is refused rather than pursued.
_MAX_ITERATIONS = 100_000
# Decode time is taken as linear in the average context over this many tokens.
_SLOPE_TOKENS = 64


@dataclass(frozen=True, slots=True)
class ShadowOutcome:
    ok: bool
    end_s: float  # simulated time at which the run stopped
    iterations: int
    late_request_id: str | None = None  # the first request whose token would be late


class _Req:
    """A request as the run keeps it. Its next token's deadline is computed as `deadline_s`
    computes it (same terms, same order), so the run orders instances exactly as the arbiter
    does, ties included; `lim` is what that token is held to (module docstring)."""

    __slots__ = ("request_id", "base", "ttft", "tpot", "out", "lim", "at", "tokens")

    def __init__(self, r: RequestLike, wait: float, lim: float, at: int) -> None:
        self.request_id = r.request_id
        self.base = r.arrival_s + (r.excused_s + wait)
        self.ttft = r.ttft_slo_s
        self.tpot = r.tpot_slo_s
        self.out = r.output_tokens  # tokens produced when the instance had run `at` steps
        self.lim = lim
        self.at = at
        self.tokens = prefill_tokens(r)

    def deadline(self, margin: float, steps: int) -> float:
        return self.base + margin * (self.ttft + self.tpot * (self.out + steps - self.at))


class _Inst:
    """An instance's copy: what the arbiter's `order_key` reads, kept current."""

    __slots__ = (
        "instance_id",
        "perf",
        "spec",
        "decoders",
        "queue",
        "batch",
        "context",
        "runnable",
        "ready_at_s",
        "steps",
        "need",
        "done",
        "margin",
        "first",
        "deadline",
        "limit",
        "uniform",
        "d0",
        "slope",
        "since",
        "version",
    )

    def __init__(self, base: InstanceLike, ready_at_s: float | None, margin: float) -> None:
        self.instance_id = base.instance_id
        self.perf: PerfModel = base.perf
        self.spec: ModelSpec = base.spec
        self.decoders: list[_Req] = []
        self.queue: list[_Req] = []
        self.batch = 0
        self.context = 0
        self.runnable = ready_at_s is None
        self.ready_at_s = ready_at_s
        self.steps = 0  # decode iterations run
        self.need = 0  # decode iterations after which every request has its K tokens
        self.done = False
        self.margin = margin
        self.first: _Req | None = None  # the decoder with the earliest deadline
        self.deadline = self.limit = 0.0
        self.uniform = True  # every decoder has the same TPOT SLO
        self.d0 = self.slope = 0.0
        self.since = -1  # steps at the last decode-time evaluation (-1: none yet)
        self.version = 0

    @property
    def prefill_queue(self) -> list[_Req]:
        return self.queue

    def earliest_deadline_s(self, margin: float) -> float | None:
        queued = min((q.deadline(margin, 0) for q in self.queue), default=None)
        if not self.decoders:
            return queued
        return self.deadline if queued is None or self.deadline < queued else queued

    def aggregate(self) -> None:
        """Earliest deadline and limit of the decoders, now (after a prefill or at start)."""
        m, steps = self.margin, self.steps
        self.first = None
        self.deadline = self.limit = float("inf")
        for r in self.decoders:
            d = r.deadline(m, steps)
            if d < self.deadline:
                self.first, self.deadline = r, d
            self.limit = min(self.limit, r.lim + m * r.tpot * (steps - r.at))
        self.uniform = len({r.tpot for r in self.decoders}) <= 1
        self.since = -1

    def decode_s(self) -> float:
        """Predicted time of the next decode step (linear in context since the last batch)."""
        batch = len(self.decoders)
        if self.since < 0:
            avg = self.context / batch
            self.d0 = self.perf.decode_s(avg, batch)
            self.slope = (self.perf.decode_s(avg + _SLOPE_TOKENS, batch) - self.d0) / _SLOPE_TOKENS
            self.since = self.steps
        return self.d0 + self.slope * (self.steps - self.since)

    def step(self) -> None:
        """Every decoder produced a token; with one TPOT SLO their order does not change."""
        self.steps += 1
        self.context += len(self.decoders)
        if self.uniform and self.first is not None:
            self.deadline = self.first.deadline(self.margin, self.steps)
            self.limit += self.margin * self.first.tpot
        else:
            self.aggregate()

    def late_decoder(self, t: float) -> str | None:
        m = self.margin
        for r in self.decoders:
            if t > r.lim + m * r.tpot * (self.steps - r.at):
                return r.request_id
        return None


def _waited(r: RequestLike, ready_at: float | None) -> float:
    return max(ready_at - r.arrival_s, 0.0) if ready_at is not None else 0.0


def _copy(
    inst: InstanceLike,
    added: Sequence[RequestLike],
    now: float,
    start: float,
    margin: float,
    excuse_load: bool,
) -> _Inst:
    ready_at = inst.ready_at_s if inst.phase is InstancePhase.LOADING else None
    if inst.phase is InstancePhase.LOADING and ready_at is None:
        ready_at = now  # no prediction: assume it is about to be ready (optimistic)
    wait = max(ready_at - now, 0.0) if ready_at is not None else 0.0
    copy = _Inst(inst, ready_at, margin)
    queued = {r.request_id for r in inst.prefill_queue}
    # Already waiting on the load: excused since it came (the module's note).
    fresh = [(r, _waited(r, ready_at), r.request_id in queued) for r in inst.requests]
    fresh += [(r, wait if excuse_load else 0.0, True) for r in added]
    for r, w, is_queued in fresh:
        d = (
            r.arrival_s
            + (r.excused_s + w)
            + margin * (r.ttft_slo_s + r.tpot_slo_s * r.output_tokens)
        )
        late_by = margin * (r.ttft_slo_s if is_queued else r.tpot_slo_s)
        lim = d if d >= start else start + late_by  # late: keep pace from now on
        (copy.queue if is_queued else copy.decoders).append(_Req(r, w, lim, 0))
        copy.context += r.input_tokens + r.output_tokens
    copy.batch = len(copy.decoders) + len(copy.queue)
    return copy


def shadow_run(
    device: DeviceLike,
    target: InstanceLike,
    added: Sequence[RequestLike],
    now: float,
    config: PolicyConfig,
    excuse_load: bool = True,
) -> ShadowOutcome:
    """Would `device` meet every token deadline with `added` joining `target`?

    `target` is one of the device's instances (matched by id) or a new one; `added` are
    requests not yet on it (a fresh request, or the requests a preemption moves).
    """
    margin = config.slo_margin
    k = config.shadow_tokens
    start = now if device.busy_until_s is None else max(now, device.busy_until_s)
    copies: list[_Inst] = []
    target_index = -1
    for inst in device.instances:
        if inst.instance_id == target.instance_id:
            target_index = len(copies)
            copies.append(_copy(target, added, now, start, margin, excuse_load))
        elif inst.phase is not InstancePhase.RELEASING and inst.requests:
            copies.append(_copy(inst, (), now, start, margin, excuse_load))
    if target_index < 0:
        target_index = len(copies)
        copies.append(_copy(target, added, now, start, margin, excuse_load))
    for shadow in copies:
        # Decoders present now need K decode steps; prefilled requests K - 1 after theirs.
        shadow.need = k if shadow.decoders else k - 1
        shadow.aggregate()
    return _run(copies, target_index, device.kind, start, config)


def _run(
    copies: list[_Inst], target: int, kind: DeviceKind, start: float, config: PolicyConfig
) -> ShadowOutcome:
    """Grant by grant, in the arbiter's order, until every request has produced K tokens or
    has none due within the window (module docstring)."""
    margin = config.slo_margin
    arbiter = Arbiter(config)
    window = (
        config.shadow_tokens
        * config.slo_margin
        * max((r.tpot for c in copies for r in (*c.decoders, *c.queue)), default=0.0)
    )
    horizon = float("inf")  # set once the requests under test have their first token
    pending = len(copies)
    heap: list[tuple[tuple[float, int], int, int]] = []  # (order key, version, index)

    def push(index: int) -> None:
        c = copies[index]
        key = arbiter.order_key(c, index)  # type: ignore[arg-type]
        if key is not None:
            c.version += 1
            heapq.heappush(heap, (key, c.version, index))

    waiting = sorted(
        (n for n, c in enumerate(copies) if not c.runnable),
        key=lambda n: copies[n].ready_at_s or 0.0,
    )
    for n in range(len(copies)):
        push(n)
    t = start
    iterations = 0
    while pending > 0:
        while waiting and (copies[waiting[0]].ready_at_s or 0.0) <= t:
            ready = waiting.pop(0)
            copies[ready].runnable = True
            push(ready)
        if not heap:
            if not waiting:
                break  # unreachable while copies are pending: every copy has requests
            t = copies[waiting[0]].ready_at_s or t
            continue
        key, version, index = heapq.heappop(heap)
        inst = copies[index]
        if version != inst.version:
            continue  # a stale key: the instance ran since it was pushed
        if key[0] > horizon and not waiting:
            break  # nothing left is due within the window (the heap's least key is past it)
        grant = 1 if kind is DeviceKind.CPU or inst.queue else inst.spec.gpu_decode_grant
        for _ in range(grant):
            iterations += 1
            if inst.queue:
                queue, inst.queue = inst.queue, []
                t += prefill_time_s(inst.perf, (r.tokens for r in queue))
                for r in queue:
                    if t > r.lim:
                        return ShadowOutcome(False, t, iterations, r.request_id)
                    r.out += 1
                    r.lim += margin * r.tpot
                    r.at = inst.steps
                    inst.decoders.append(r)
                inst.context += len(queue)
                inst.aggregate()
                if index == target:
                    horizon = t + window
            else:
                t += inst.decode_s()
                if t > inst.limit:
                    return ShadowOutcome(False, t, iterations, inst.late_decoder(t))
                inst.step()
            if not inst.done and not inst.queue and inst.steps >= inst.need:
                inst.done = True
                pending -= 1
                if pending == 0:
                    break
        if iterations >= _MAX_ITERATIONS:
            return ShadowOutcome(False, t, iterations)
        push(index)
    return ShadowOutcome(True, t, iterations)
