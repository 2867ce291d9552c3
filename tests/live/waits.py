"""Waiting in the live tests: on a state change, never a fixed sleep (STYLE.md).

`wait_until` polls a predicate (plain or async) every 20 ms and fails the test with what it
was waiting for when the time is up. The timeout is an upper bound for a loaded machine, not
part of what the test asserts: nothing here slows a test down on a fast one.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

# Long enough for a busy 2-core machine running several suites at once.
DEFAULT_TIMEOUT_S = 60.0


async def wait_until(
    predicate: Callable[[], T | Awaitable[T]],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    what: str = "a condition",
    interval_s: float = 0.02,
) -> T:
    """Return the predicate's first truthy value; fail after `timeout_s` naming `what`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(interval_s)
