"""The device loop: one per CPU socket or GPU; it owns the thread that runs the engines.

Co-located instances take turns owning the whole device, one iteration at a time
(DESIGN.md §2). Every engine call (add, abort, step, load) goes through the device's single
executor thread, so an engine is never entered concurrently and a resize or an abort always
lands between two iterations. Which instance runs next is a policy decision (`choose_next`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from loguru import logger

from services.worker import metrics
from services.worker.engine.base import Engine, IterationResult, Phase
from services.worker.instance import Instance, InstanceState

T = TypeVar("T")

ChooseNext = Callable[[list[Instance], float], Instance | None]


def round_robin() -> ChooseNext:
    """Fair turns among busy instances (the default until the arbiter's leases exist)."""
    last: list[str] = []

    def choose(candidates: list[Instance], now: float) -> Instance | None:
        if not candidates:
            return None
        ids = [c.instance_id for c in candidates]
        start = (ids.index(last[0]) + 1) if last and last[0] in ids else 0
        pick = candidates[start % len(candidates)]
        last[:] = [pick.instance_id]
        return pick

    return choose


class Device:
    def __init__(self, name: str, choose_next: ChooseNext | None = None):
        self.name = name
        self.instances: dict[str, Instance] = {}
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"engine-{name}")
        self._wake = asyncio.Event()
        self._choose = choose_next or round_robin()
        self._task: asyncio.Task[None] | None = None
        self.iterations = 0

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
            inst = self._choose(self._candidates(), time.monotonic())
            if inst is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                result, stats = await self.call(_step, inst.engine)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an engine bug must not stop the other instances
                logger.exception("iteration failed on {}: {}", inst.instance_id, exc)
                self._fail_streams(inst, f"iteration failed: {exc}")
                continue
            inst.stats = stats
            self._dispatch(inst, result)
            if result.phase is Phase.IDLE:
                # The engine has nothing runnable although streams are open (e.g. a request
                # waiting for KV); yield instead of spinning.
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.05)

    def _dispatch(self, inst: Instance, result: IterationResult) -> None:
        self.iterations += 1
        if result.phase is not Phase.IDLE:
            metrics.ITERATION_SECONDS.labels(result.phase.value).observe(result.duration_s)
            metrics.BATCH_SIZE.labels(inst.model_id).observe(result.batch_size)
        for out in result.outputs:
            queue = inst.streams.get(out.request_id)
            if queue is not None:
                queue.put_nowait(out)

    def _fail_streams(self, inst: Instance, reason: str) -> None:
        inst.error = reason
        for queue in inst.streams.values():
            queue.put_nowait(None)


def _step(engine: Engine) -> tuple[IterationResult, Any]:
    result = engine.step()
    return result, engine.stats()
