"""Replay a ../shared/traces file against the live gateway (`slinfer replay`).

Function j of the selected functions (the first k of each group of 8, as the paper's load
levels) maps to the j-th model id. Arrivals are replayed at `time_scale` wall seconds per
trace second (0.1 = ten times faster); each request sends `input` random token ids and asks
for exactly `output` tokens (ignore_eos), both multiplied by `length_scale` and clipped to the
model's context. Results are written one JSON object per request, with the simulator's fields
(sim/metrics.py `RequestRecord`): TTFT, TPOT, the load time excused, and SLO met in the
paper's view (load excused) and strictly.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from slinfer.client import AsyncClient, Completion, SlinferError
from slinfer.policy import SloPolicy
from slinfer.sim.metrics import percentile  # the simulator's, so both report alike
from slinfer.sim.trace import TraceRequest, load_trace

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    trace: Path
    model_ids: tuple[str, ...]
    models: int | None = None
    time_scale: float = 1.0
    duration_s: float | None = None  # trace seconds taken (before time scaling)
    length_scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.time_scale <= 0 or self.length_scale <= 0:
            raise ValueError("time_scale and length_scale must be > 0")
        if not self.model_ids:
            raise ValueError("at least one model id is needed")


@dataclass(frozen=True, slots=True)
class ReplayRecord:
    index: int
    model_id: str
    outcome: str  # "done", "dropped" (refused: no capacity in time) or "failed"
    arrival_s: float  # wall seconds from the start of the replay
    input_tokens: int
    output_tokens: int
    ttft_s: float | None
    tpot_s: float | None
    excused_s: float
    preemptions: int
    slo_met: bool
    slo_met_strict: bool
    ttft_slo_s: float
    tpot_slo_s: float
    error: str = ""


@dataclass
class ReplaySummary:
    requests: int = 0
    completed: int = 0
    dropped: int = 0
    failed: int = 0
    slo_met: int = 0
    slo_met_strict: int = 0
    ttft_s: list[float] = field(default_factory=list)
    tpot_s: list[float] = field(default_factory=list)

    def add(self, r: ReplayRecord) -> None:
        self.requests += 1
        self.completed += r.outcome == "done"
        self.dropped += r.outcome == "dropped"
        self.failed += r.outcome == "failed"
        self.slo_met += r.slo_met
        self.slo_met_strict += r.slo_met_strict
        if r.ttft_s is not None:
            self.ttft_s.append(r.ttft_s)
        if r.tpot_s is not None and r.output_tokens > 1:
            self.tpot_s.append(r.tpot_s)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "completed": self.completed,
            "dropped": self.dropped,
            "failed": self.failed,
            "slo_met": self.slo_met,
            "slo_met_strict": self.slo_met_strict,
            "ttft_p50_s": percentile(self.ttft_s, 0.50),
            "ttft_p99_s": percentile(self.ttft_s, 0.99),
            "tpot_p50_s": percentile(self.tpot_s, 0.50),
            "tpot_p99_s": percentile(self.tpot_s, 0.99),
        }


def _lengths(req: TraceRequest, scale: float, max_len: int) -> tuple[int, int]:
    n_in = max(1, round(req.input_tokens * scale))
    n_out = max(1, round(req.output_tokens * scale))
    if n_in + n_out > max_len:  # keep the output, clip the prompt to the context
        n_out = min(n_out, max_len // 2)
        n_in = max(1, max_len - n_out)
    return n_in, n_out


async def _one(
    client: AsyncClient,
    req: TraceRequest,
    model: Any,
    cfg: ReplayConfig,
    t0: float,
    rng: random.Random,
) -> ReplayRecord:
    n_in, n_out = _lengths(req, cfg.length_scale, model.max_model_len or 2048)
    vocab = max(model.vocab_size, 64)
    ids = [rng.randrange(10, vocab - 10) for _ in range(n_in)]
    policy = SloPolicy(tpot_s=model.tpot_slo_s or 0.25)
    ttft_slo = model.ttft_slo_s or policy.ttft_s(n_in)
    tpot_slo = policy.tpot_s
    arrival = time.monotonic() - t0
    final: Completion | None = None
    outcome, error = "done", ""
    try:
        async for ev in client.generate(
            model.model_id,
            prompt_token_ids=ids,
            max_tokens=n_out,
            temperature=0.0,
            ignore_eos=True,
        ):
            if isinstance(ev, Completion):
                final = ev
    except SlinferError as exc:
        outcome = (
            "dropped" if exc.code.name in ("RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED") else "failed"
        )
        error = f"{exc.code.name}: {exc.message}"
    ttft = final.ttft_s if final else None
    tpot = final.tpot_s if final else None
    excused = final.load_s if final else 0.0
    met = strict = False
    if final is not None:
        tpot_ok = final.completion_tokens <= 1 or final.tpot_s <= tpot_slo + _EPS
        met = tpot_ok and final.ttft_s - excused <= ttft_slo + _EPS
        strict = tpot_ok and final.ttft_s <= ttft_slo + _EPS
    return ReplayRecord(
        req.index,
        model.model_id,
        outcome,
        round(arrival, 4),
        n_in,
        final.completion_tokens if final else 0,
        ttft,
        tpot,
        excused,
        0,
        met,
        strict,
        ttft_slo,
        tpot_slo,
        error,
    )


async def replay(client: AsyncClient, cfg: ReplayConfig, out: Path | None = None) -> ReplaySummary:
    trace = load_trace(
        cfg.trace, models=cfg.models, duration_s=cfg.duration_s, rate_scale=1.0 / cfg.time_scale
    )
    if len(cfg.model_ids) < trace.models:
        raise ValueError(
            f"the trace selection has {trace.models} functions but only "
            f"{len(cfg.model_ids)} model ids were given"
        )
    infos = {m.model_id: m for m in await client.models()}
    missing = [m for m in cfg.model_ids[: trace.models] if m not in infos]
    if missing:
        raise ValueError(f"models not deployed: {missing} (deploy them first)")
    model_of = {fn: infos[cfg.model_ids[j]] for j, fn in enumerate(trace.functions)}
    rng = random.Random(cfg.seed)
    summary = ReplaySummary()
    sink = out.open("w") if out else None
    t0 = time.monotonic()
    tasks: list[asyncio.Task[ReplayRecord]] = []
    try:
        for req in trace.requests:
            delay = req.arrival_s - (time.monotonic() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(
                asyncio.create_task(
                    _one(client, req, model_of[req.function], cfg, t0, random.Random(rng.random()))
                )
            )
        for rec in sorted(await asyncio.gather(*tasks), key=lambda r: r.index):
            summary.add(rec)
            if sink:
                sink.write(json.dumps(asdict(rec)) + "\n")
    finally:
        if sink:
            sink.close()
    return summary
