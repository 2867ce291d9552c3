"""Live performance model: a worker measures its own engine's prefill and decode tables.

The tables have the ../shared/profiles format (`prefill_ms: [[input_tokens, ms], ...]`,
`decode_ms: [[avg_context, [[batch, ms], ...]], ...]`) on grids cut to what is quick, so the
policy core's `PerfModel.from_tables` reads them unchanged. Results are cached on disk keyed
by model (config + weight files), engine and its cost version, dtype and hardware, and
published in etcd.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slinfer.services.worker.engine.base import Engine, EngineRequest, Phase, SamplingParams
from slinfer.services.worker.engine.perf_version import perf_version


@dataclass(frozen=True, slots=True)
class ProfileGrid:
    # Cut to what is quick (a first load waits for it): SmolLM2 on 2 AVX2 cores measured in
    # about 10 s; the perf model interpolates between points and extrapolates past them.
    prefill_tokens: tuple[int, ...] = (16, 64, 256)
    decode_context: tuple[int, ...] = (64, 256)
    decode_batch: tuple[int, ...] = (1, 4)
    # Timed iterations per point; the fastest is kept: interference from other processes only
    # ever adds time, so the minimum is the best estimate of the engine's own cost.
    repeats: int = 2

    def __post_init__(self) -> None:
        if not self.prefill_tokens or not self.decode_context or not self.decode_batch:
            raise ValueError("every grid axis needs at least one point")
        if self.repeats < 1:
            raise ValueError("repeats must be >= 1")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def profile_key(model_dir: Path, engine: str, dtype: str, threads: int, device: str) -> str:
    """Same model files, engine (and its cost version), dtype and hardware -> same key (and
    cached tables)."""
    h = hashlib.sha256()
    h.update((model_dir / "config.json").read_bytes())
    for f in sorted(model_dir.glob("*.safetensors")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    h.update(f"{engine}@{perf_version(engine)}|{dtype}|{threads}|{device}|{cpu_name()}".encode())
    return h.hexdigest()[:24]


def _prompt(rng: random.Random, n: int, vocab: int) -> tuple[int, ...]:
    # Ids from the middle of the vocabulary: real tokens, not special ones.
    lo, hi = min(8, vocab - 1), max(9, vocab - 8)
    return tuple(rng.randrange(lo, hi) for _ in range(n))


def _drain(engine: Engine) -> None:
    while engine.has_work():
        engine.step()


def measure(engine: Engine, grid: ProfileGrid, vocab_size: int, seed: int = 0) -> dict[str, Any]:
    """Run the grid on the engine (which must be idle); returns the two tables.

    Grid points that need more KV than the instance has are skipped.
    """
    rng = random.Random(seed)
    stats = engine.stats()
    capacity = stats.kv_capacity_tokens
    max_len = stats.max_model_len
    greedy = SamplingParams(temperature=0.0, max_tokens=1)
    # Warm-up: first calls allocate.
    engine.add_request(EngineRequest("profile-warm", _prompt(rng, 8, vocab_size), greedy))
    _drain(engine)
    prefill: list[list[float]] = []
    for n in grid.prefill_tokens:
        if n + 2 > min(capacity, max_len):
            continue
        times = []
        for r in range(grid.repeats):
            engine.add_request(
                EngineRequest(f"profile-p{n}-{r}", _prompt(rng, n, vocab_size), greedy)
            )
            res = engine.step()
            times.append(res.duration_s * 1000)
            _drain(engine)
        prefill.append([n, round(min(times), 3)])
    decode: list[list[Any]] = []
    steps = grid.repeats + 1
    for ctx in grid.decode_context:
        row: list[list[float]] = []
        for b in grid.decode_batch:
            if b * (ctx + steps + 2) > capacity or ctx + steps + 2 > max_len:
                continue
            params = SamplingParams(temperature=0.0, max_tokens=steps + 1)
            ids = [f"profile-d{ctx}-{b}-{i}" for i in range(b)]
            for rid in ids:
                engine.add_request(EngineRequest(rid, _prompt(rng, ctx, vocab_size), params))
            # Prefill everything first; then time pure decode iterations of the whole batch.
            while engine.stats().waiting > 0:
                engine.step()
            times = []
            for _ in range(grid.repeats):
                res = engine.step()
                if res.phase is Phase.DECODE and res.batch_size == b:
                    times.append(res.duration_s * 1000)
            for rid in ids:
                engine.abort_request(rid)
            _drain(engine)
            if times:
                row.append([b, round(min(times), 3)])
        if row:
            decode.append([ctx, row])
    if not prefill or not decode:
        raise ValueError(f"KV capacity {capacity} tokens is too small to profile on grid {grid}")
    return {"prefill_ms": prefill, "decode_ms": decode}


def spot_check(engine: Engine, tables: dict[str, Any], vocab_size: int) -> float:
    """Measured / tabled time at the tables' first points (fastest of two): a prefill, and
    the batch-1 decode step after it.

    A table measured while the machine was busy over-states every cost; a ratio well below 1
    (of either phase) says so, and the caller measures again. (A ratio above 1 means the
    machine is busy now: the table stays, since interference only ever adds time.)
    """
    n, prefill_ms = tables["prefill_ms"][0]
    decode_rows = dict((int(b), float(ms)) for b, ms in tables["decode_ms"][0][1])
    decode_ms = decode_rows.get(1)
    rng = random.Random(1)
    params = SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True)
    prefills, decodes = [], []
    for r in range(2):
        engine.add_request(EngineRequest(f"spot-{r}", _prompt(rng, int(n), vocab_size), params))
        prefills.append(engine.step().duration_s * 1000)
        step = engine.step()
        if step.phase is Phase.DECODE and step.batch_size == 1:
            decodes.append(step.duration_s * 1000)
        _drain(engine)
    ratio = min(prefills) / max(float(prefill_ms), 1e-6)
    if decodes and decode_ms:
        ratio = min(ratio, min(decodes) / max(decode_ms, 1e-6))
    return ratio


class ProfileCache:
    """Tables on disk under $SLINFER_HOME/profiles/{key}.json."""

    def __init__(self, root: Path | None = None):
        home = Path(os.environ.get("SLINFER_HOME", Path.home() / ".cache" / "slinfer"))
        self.root = root or home / "profiles"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self.root / f"{key}.json"
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            return None

    def put(self, key: str, tables: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({**tables, "measured_at": time.time()}, indent=1))
        tmp.replace(self.root / f"{key}.json")
