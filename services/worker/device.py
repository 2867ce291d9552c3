"""The device loop: one per CPU socket or GPU; it owns the thread that runs the engines.

Co-located instances take turns owning the whole device, one iteration at a time
(DESIGN.md §2). Every engine call (add, abort, step, load) goes through the device's single
executor thread, so an engine is never entered concurrently and a resize or an abort always
lands between two iterations. Which instance runs next, and for how many iterations, is the
arbiter's decision (arbiter.py, the policy core's EDF arbiter).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from loguru import logger

from slinfer.policy.calibration import IterationRatio, PrefillShare
from slinfer.services.common.records import InstanceState
from slinfer.services.worker import metrics
from slinfer.services.worker.arbiter import DeviceArbiter
from slinfer.services.worker.engine.base import (
    Engine,
    FinishReason,
    IterationResult,
    Phase,
    RequestOutput,
)
from slinfer.services.worker.instance import Instance

T = TypeVar("T")


class DeviceCalibration:
    """What the device measures of itself for admission (DESIGN.md §2, calibration.py): its
    prefill share ρ, its observed/predicted iteration ratio (wall time of an iteration,
    worker overhead included, against the instance's table without its safety factor), its
    load throughput, and the per-iteration overhead beyond the engine's own step time."""

    def __init__(self, window_s: float) -> None:
        self.prefill = PrefillShare(window_s)
        self.ratio = IterationRatio()
        self.load_bytes_per_s = 0.0  # EMA over loads; 0 until the first one
        self.overhead_s_total = 0.0
        self.iterations = 0

    def observe_load(self, weights_bytes: int, load_s: float) -> None:
        if weights_bytes <= 0 or load_s <= 0:
            return
        rate = weights_bytes / load_s
        old = self.load_bytes_per_s
        self.load_bytes_per_s = rate if old == 0 else 0.7 * old + 0.3 * rate

    @property
    def overhead_s(self) -> float:
        """Mean wall time of an iteration beyond the engine's own step."""
        return self.overhead_s_total / self.iterations if self.iterations else 0.0


class Device:
    def __init__(self, name: str, arbiter: DeviceArbiter, prefill_window_s: float = 30.0):
        self.name = name
        self.instances: dict[str, Instance] = {}
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"engine-{name}")
        self.arbiter = arbiter
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.iterations = 0
        self.iteration_s_total = 0.0
        self.calibration = DeviceCalibration(prefill_window_s)
        # (start, end, instance, phase, batch) of recent iterations as the loop saw them:
        # perf_counter times around the grant's executor hop, so start-to-start gaps hold the
        # arbiter's decision, the hop and the dispatch too (bench/engine.py reads them).
        self.iteration_log: deque[tuple[float, float, str, str, int]] = deque(maxlen=4096)
        # Called (on the event loop) when an instance's engine broke: unload it.
        self.on_failure: Callable[[Instance], None] | None = None

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn on the device thread, between iterations."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def abort(self, inst: Instance, request_id: str) -> Any:
        """Abort a request between iterations and refresh the instance's figures, so Stats
        shows its slot and KV freed at once, not at the instance's next iteration (which an
        idle instance may never run)."""
        if inst.engine is None:
            return None
        out, inst.stats = await self.call(_abort, inst.engine, request_id)
        return out

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"device:{self.name}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.executor.shutdown(wait=True, cancel_futures=False)

    def _candidates(self) -> list[Instance]:
        return [
            i
            for i in self.instances.values()
            if i.busy
            and i.engine is not None
            and i.state in (InstanceState.READY, InstanceState.DRAINING)
        ]

    async def _run(self) -> None:
        while True:
            choice = self.arbiter.choose(self._candidates())
            if choice is None:
                self._wake.clear()
                # Re-check periodically: deadlines move with time even without events.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.5)
                continue
            inst, iterations = choice
            for _ in range(iterations):
                if not inst.busy or inst.engine is None:
                    break
                try:
                    started, t0 = time.time(), time.perf_counter()
                    result, stats = await self.call(_step, inst.engine)
                    ended = time.perf_counter()
                    wall_s = ended - t0
                    self.iteration_log.append(
                        (t0, ended, inst.instance_id, result.phase.value, result.batch_size)
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # an engine bug must not stop the other instances
                    # The engine isolates what one request causes (it ends that request with
                    # FinishReason.ERROR); reaching here means the engine itself is broken.
                    logger.exception("iteration failed on {}: {}", inst.instance_id, exc)
                    self._fail_instance(inst, f"iteration failed: {type(exc).__name__}: {exc}")
                    break
                inst.stats = stats
                self._calibrate(inst, result, started, wall_s)
                self._dispatch(inst, result)
                if result.phase is Phase.IDLE:
                    # Nothing runnable although streams are open (a request waiting for KV,
                    # or its output not yet consumed): yield instead of spinning.
                    self._wake.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 0.05)
                    break

    def _dispatch(self, inst: Instance, result: IterationResult) -> None:
        self.iterations += 1
        if result.phase is not Phase.IDLE:
            self.iteration_s_total += result.duration_s
            metrics.ITERATION_SECONDS.labels(result.phase.value).observe(result.duration_s)
            metrics.BATCH_SIZE.labels(inst.model_id).observe(result.batch_size)
            metrics.DEVICE_SECONDS.labels(self.name, inst.model_id).inc(result.duration_s)
            if self.iteration_s_total > 0:
                metrics.ARBITER_OVERHEAD.labels(self.name).set(self.overhead_ratio)
        for out in result.outputs:
            tracked = inst.requests.get(out.request_id)
            if tracked is not None and out.new_token_ids:
                tracked.prefilled = True
                tracked.output_tokens += len(out.new_token_ids)
            queue = inst.streams.get(out.request_id)
            if queue is not None:
                queue.put_nowait(out)

    def _calibrate(
        self, inst: Instance, result: IterationResult, started: float, wall_s: float
    ) -> None:
        if result.phase is Phase.IDLE:
            return
        cal = self.calibration
        cal.iterations += 1
        cal.overhead_s_total += max(wall_s - result.duration_s, 0.0)
        if result.phase is Phase.PREFILL:
            cal.prefill.record(started, started + wall_s)
        elif inst.perf is not None and result.batch_size:
            batch = result.batch_size
            table_s = inst.perf.decode_s(result.context_tokens / batch, batch) / inst.perf.safety
            cal.ratio.observe(wall_s, table_s)

    @property
    def overhead_ratio(self) -> float:
        """Arbiter time over engine iteration time since start."""
        if self.iteration_s_total <= 0:
            return 0.0
        return self.arbiter.decide_s_total / self.iteration_s_total

    def _fail_instance(self, inst: Instance, reason: str) -> None:
        """The instance is broken: it takes no more requests (FAILED, published and unloaded
        by `on_failure`), and its streams end with FinishReason.ERROR, never re-dispatched:
        what broke this engine could break the next one."""
        inst.error = reason
        inst.state = InstanceState.FAILED
        for rid, queue in list(inst.streams.items()):
            queue.put_nowait(
                RequestOutput(
                    request_id=rid,
                    new_token_ids=(),
                    text_delta="",
                    finished=True,
                    finish_reason=FinishReason.ERROR,
                    error=f"instance {inst.instance_id} failed: {reason}",
                )
            )
        if self.on_failure is not None:
            self.on_failure(inst)


def _step(engine: Engine) -> tuple[IterationResult, Any]:
    result = engine.step()
    return result, engine.stats()


def _abort(engine: Engine, request_id: str) -> tuple[Any, Any]:
    out = engine.abort_request(request_id)
    return out, engine.stats()
