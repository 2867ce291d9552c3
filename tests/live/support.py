"""What several live test modules share: perf tables seeded for the workers' dtype, the
footprint of a model as the workers will load it, and holds that keep a stream mid-way or a
load in flight for exactly as long as a test needs (events, not sleeps)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slinfer.policy.calibration import IterationRatio
from slinfer.services.common.engine_types import WeightFormat
from slinfer.services.inprocess import LiveStack
from slinfer.services.worker.calibration import auto_table_key
from slinfer.services.worker.engine.base import IterationResult, Phase
from slinfer.services.worker.engine.dtype import cpu_dtype_from_env
from slinfer.services.worker.profiler import ProfileCache


def seed_perf_tables(root: Path, model_dir: Path, tables: dict[str, Any], threads: int = 1) -> Path:
    """Pin `tables` in a profile cache under the key a worker of this environment looks up:
    the engine and weight format `auto` picks there (SLINFER_CPU_ENGINE, OpenVINO where
    installed), and its dtype (SLINFER_CPU_DTYPE, else what the CPU picks). Pinned tables
    model the device on purpose (a test's deliberately slow device), so no spot check
    replaces them."""
    ProfileCache(root).put(auto_table_key(model_dir, threads), {**tables, "pinned": True})
    return root


@dataclass(frozen=True, slots=True)
class Footprint:
    """A model as the workers of this environment load it (measured, not assumed)."""

    weights_bytes: int
    kv_bytes_per_token: int

    def bytes(self, kv_tokens: int) -> int:
        return self.weights_bytes + kv_tokens * self.kv_bytes_per_token


def measure_footprint(model_dir: Path, weights: WeightFormat = WeightFormat.AUTO) -> Footprint:
    """The engine a CPU worker of this environment picks for `model_dir` by default, with
    `weights` (auto: the worker's choice too), loaded once and measured."""
    from slinfer.services.worker.engine.registry import EngineSpec, create_engine, engine_for

    kind = engine_for("cpu", None, model_dir)
    spec = EngineSpec(
        model_dir, 64, "cpu", cpu_dtype=cpu_dtype_from_env(), weights=weights
    )
    engine = create_engine(kind, spec)
    try:
        stats = engine.stats()
        return Footprint(stats.weights_bytes, stats.kv_bytes_per_token)
    finally:
        engine.close()


@contextlib.contextmanager
def hold_iterations(engine: Any) -> Iterator[None]:
    """The engine runs no iteration until the block exits: its steps come back idle, so the
    device loop waits and retries, while aborts and resizes still run between them. A stream
    stays mid-way for as long as the test needs, whatever the CPU's speed."""

    def idle() -> IterationResult:
        return IterationResult(phase=Phase.IDLE, batch_size=0, context_tokens=0, duration_s=0.0)

    engine.step = idle  # shadows the method on this instance only
    try:
        yield
    finally:
        del engine.step


@contextlib.contextmanager
def hold_executor(executor: Executor) -> Iterator[None]:
    """Occupy a one-thread executor (a worker's loader) until the block exits: what is
    submitted meanwhile waits behind it."""
    gate = threading.Event()
    done = executor.submit(gate.wait)
    try:
        yield
    finally:
        gate.set()
        done.result()


@contextlib.contextmanager
def recorded_token_ids(stack: Any) -> Iterator[dict[str, list[int]]]:
    """Token ids of every request the scheduler streams meanwhile, by request id (white-box:
    the gateway's chunks carry text and token counts, the worker's responses the ids)."""
    from slinfer.services.scheduler.registry import client_id

    dispatcher = stack.scheduler.dispatcher
    original = dispatcher.generate
    seen: dict[str, list[int]] = {}

    async def generate(model, req, prompt_ids, sampling, resumed=()):  # noqa: ANN001, ANN202
        ids = seen.setdefault(client_id(req.request_id), list(resumed))
        async for placed, resp in original(model, req, prompt_ids, sampling, resumed):
            ids.extend(resp.token_ids)
            yield placed, resp

    dispatcher.generate = generate
    try:
        yield seen
    finally:
        del dispatcher.generate


class PinnedRatio(IterationRatio):
    """A worker calibration that counts iterations but keeps the ratio at 1: for tests whose
    seeded tables stand for the device (the tiny models run far faster than the tables, and
    a held iteration far slower, so calibration would rescale the budgets under test)."""

    def observe(self, observed_s: float, predicted_s: float) -> None:
        self.samples += 1


def pin_calibration(stack: LiveStack) -> None:
    for worker in stack.workers:
        worker.device.calibration.ratio = PinnedRatio()


class Lockstep:
    """An engine that runs one iteration per `grant()` (see `lockstep`)."""

    def __init__(self, engine: Any) -> None:
        self._permits = threading.Semaphore(0)
        self._real_step = engine.step
        self.iterations = 0
        self.produced: dict[str, int] = {}  # tokens each request got, engine-side

    def grant(self) -> None:
        self._permits.release()

    def step(self) -> IterationResult:
        if not self._permits.acquire(blocking=False):
            return IterationResult(phase=Phase.IDLE, batch_size=0, context_tokens=0, duration_s=0.0)
        result = self._real_step()
        for out in result.outputs:
            self.produced[out.request_id] = self.produced.get(out.request_id, 0) + len(
                out.new_token_ids
            )
        self.iterations += 1
        return result


@contextlib.contextmanager
def lockstep(engine: Any) -> Iterator[Lockstep]:
    """The engine runs one iteration per permit the test grants; without one its steps come
    back idle, as in `hold_iterations`. Lets a test wait for the system to settle between
    two iterations, so what it counts does not depend on the CPU's speed."""
    gate = Lockstep(engine)
    engine.step = gate.step
    try:
        yield gate
    finally:
        del engine.step


async def wipe(endpoint: str) -> None:
    """Forget a stack's state in the session's etcd, so the next module starts from nothing
    (a crashed worker's records outlive it until its lease ends; a module's models, tables
    and tallies would otherwise show in the next module's cluster view)."""
    from slinfer.services.common.store import Store

    store = Store(endpoint)
    await store.connect()
    await store.delete_prefix("/slinfer/")
    await store.close()
