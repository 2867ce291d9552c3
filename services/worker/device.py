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

from slinfer.services.worker import metrics
from slinfer.services.worker.arbiter import DeviceArbiter
from slinfer.services.worker.engine.base import Engine, IterationResult, Phase
from slinfer.services.worker.instance import Instance, InstanceState

T = TypeVar("T")


class Device:
    def __init__(self, name: str, arbiter: DeviceArbiter):
        self.name = name
        self.instances: dict[str, Instance] = {}
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"engine-{name}")
        self.arbiter = arbiter
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.iterations = 0
        self.iteration_s_total = 0.0
        # (start, end, instance, phase, batch) of recent iterations as the loop saw them:
        # perf_counter times around the grant's executor hop, so start-to-start gaps hold the
        # arbiter's decision, the hop and the dispatch too (bench/engine.py reads them).
        self.iteration_log: deque[tuple[float, float, str, str, int]] = deque(maxlen=4096)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn on the device thread, between iterations."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

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
                    t0 = time.perf_counter()
                    result, stats = await self.call(_step, inst.engine)
                    self.iteration_log.append(
                        (
                            t0,
                            time.perf_counter(),
                            inst.instance_id,
                            result.phase.value,
                            result.batch_size,
                        )
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # an engine bug must not stop the other instances
                    logger.exception("iteration failed on {}: {}", inst.instance_id, exc)
                    self._fail_streams(inst, f"iteration failed: {exc}")
                    break
                inst.stats = stats
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
            if self.iteration_s_total > 0:
                metrics.ARBITER_OVERHEAD.labels(self.name).set(self.overhead_ratio)
        if result.phase is Phase.DECODE and result.batch_size:
            inst.observe(
                result.duration_s, result.context_tokens / result.batch_size, result.batch_size
            )
        for out in result.outputs:
            tracked = inst.requests.get(out.request_id)
            if tracked is not None and out.new_token_ids:
                tracked.prefilled = True
                tracked.output_tokens += len(out.new_token_ids)
            queue = inst.streams.get(out.request_id)
            if queue is not None:
                queue.put_nowait(out)

    @property
    def overhead_ratio(self) -> float:
        """Arbiter time over engine iteration time since start."""
        if self.iteration_s_total <= 0:
            return 0.0
        return self.arbiter.decide_s_total / self.iteration_s_total

    def _fail_streams(self, inst: Instance, reason: str) -> None:
        inst.error = reason
        for queue in inst.streams.values():
            queue.put_nowait(None)


def _step(engine: Engine) -> tuple[IterationResult, Any]:
    result = engine.step()
    return result, engine.stats()
