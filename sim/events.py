"""Event queue of the simulator: one total order by key `(time, phase, seq)` (STYLE.md).

`phase` orders simultaneous events: releases and completions first (so freed resources are
visible), then arrivals, retries, wake-ups, keep-alive checks, samples and packing cycles.
`seq` is the insertion counter, so ties never depend on anything but the order of pushes.
"""

from __future__ import annotations

import enum
import heapq
from typing import Any


class Phase(enum.IntEnum):
    LOAD_DONE = 0
    GRANT_DONE = 1
    ARRIVAL = 2
    RETRY = 3
    WAKE = 4
    KEEP_ALIVE = 5
    SAMPLE = 6
    PACK = 7


Event = tuple[float, int, int, Any]


class EventQueue:
    __slots__ = ("_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[Event] = []
        self._seq = 0

    def push(self, time_s: float, phase: Phase, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time_s, int(phase), self._seq, payload))

    def pop(self) -> Event:
        return heapq.heappop(self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def pushed(self) -> int:
        return self._seq
