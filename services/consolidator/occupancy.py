"""How many nodes are in use over time: what consolidation tries to keep small.

`NodeUsage` samples a cluster view (the scheduler's or the consolidator's etcd view) and
integrates the number of nodes hosting at least one instance over wall time, so a benchmark
can report `avg_nodes` per mode (bench/live_sharing.py). GetClusterStatus shows the same thing
per node (`NodeStatus.instances`, `NodeStatus.draining`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from slinfer.services.scheduler.state import ClusterView


class UsageIntegral:
    """Time-weighted average of a count sampled now and then (each value holds until the next)."""

    def __init__(self) -> None:
        self.node_seconds = 0.0
        self.seconds = 0.0
        self.peak = 0
        self._last: tuple[float, int] | None = None

    def record(self, in_use: int, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        if self._last is not None:
            then, count = self._last
            self.node_seconds += count * (now - then)
            self.seconds += now - then
        self._last = (now, in_use)
        self.peak = max(self.peak, in_use)
        return in_use

    @property
    def average(self) -> float:
        return self.node_seconds / self.seconds if self.seconds > 0 else float(self.peak)


class NodeUsage:
    def __init__(self, view_of: Callable[[], ClusterView], every_s: float = 0.1):
        if every_s <= 0:
            raise ValueError("every_s must be > 0")
        self.view_of, self.every_s = view_of, every_s
        self.usage = UsageIntegral()
        self._task: asyncio.Task[None] | None = None

    def sample(self, now: float | None = None) -> int:
        """Record the nodes in use now; the previous count held since the previous sample."""
        return self.usage.record(len(self.view_of().nodes_in_use()), now)

    @property
    def peak(self) -> int:
        return self.usage.peak

    @property
    def avg_nodes(self) -> float:
        return self.usage.average

    def start(self) -> None:
        self.sample()
        self._task = asyncio.create_task(self._run(), name="node-usage")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            self.sample()

    async def stop(self) -> float:
        """Stop sampling; returns the time-weighted average number of nodes in use."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.sample()
        return self.avg_nodes
