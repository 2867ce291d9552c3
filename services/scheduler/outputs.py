"""The shared Ō: every scheduler adds its completions to one tally per model in etcd.

`/slinfer/outputs/{model}` holds `{"total_tokens", "count"}` of the model's completed
requests. A scheduler adds what it saw since its last addition with a read-modify-write
guarded on the key's revision (a lost race is read again and retried), so replicas never
overwrite each other; the consolidator reads the same tallies from its view.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from loguru import logger

from slinfer.services.cluster.tracker import Tracker
from slinfer.services.common import keys
from slinfer.services.common.store import Store

_ATTEMPTS = 5


async def add_tally(
    store: Store, model_id: str, total_tokens: float, count: int
) -> dict[str, Any] | None:
    """Add to the model's tally; the tally written, or None if every attempt lost its race."""
    key = keys.outputs(model_id)
    for _ in range(_ATTEMPTS):
        entry = await store.get(key)
        if entry is None:
            value: dict[str, Any] = {"total_tokens": total_tokens, "count": count}
            if await store.create(key, value):
                return value
            continue
        value = {
            "total_tokens": float(entry.value.get("total_tokens", 0.0)) + total_tokens,
            "count": int(entry.value.get("count", 0)) + count,
        }
        if await store.update(key, value, entry.mod_revision):
            return value
    return None


async def publish_outputs(
    store: Store,
    tracker: Tracker,
    written: Callable[[str, dict[str, Any]], None],
    every_s: float = 2.0,
) -> None:
    """Move the tracker's unpublished completions into the shared tallies (a task).
    `written(key, value)` shows a tally to the scheduler's own view at once."""
    while True:
        await asyncio.sleep(every_s)
        for model_id, (total, count) in list(tracker.unpublished.items()):
            try:
                tally = await add_tally(store, model_id, total, count)
            except Exception as exc:  # etcd away: keep the news for the next cycle
                logger.warning("output tally for model={} not added: {}", model_id, exc)
                continue
            if tally is not None:
                written(keys.outputs(model_id), tally)
                left_total, left_count = tracker.unpublished.get(model_id, (0.0, 0))
                rest = (left_total - total, left_count - count)
                if rest[1] > 0:
                    tracker.unpublished[model_id] = rest
                else:
                    tracker.unpublished.pop(model_id, None)
