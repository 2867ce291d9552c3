"""One `PolicyConfig` for the cluster (DESIGN.md §2–4; STYLE.md: config validated once).

The scheduler is started with the policy's constants (its flags) and publishes them at
`/slinfer/policy`; the workers' arbiters, the consolidator and the other schedulers read them
from there, so every part decides with the same numbers. Until the key exists a part uses the
defaults and says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from loguru import logger

from slinfer.policy import DEFAULT_CONFIG, PolicyConfig
from slinfer.services.common import keys
from slinfer.services.common.store import Store


async def publish_policy(store: Store, config: PolicyConfig) -> None:
    await store.put(keys.POLICY, config.to_dict())


async def watch_policy(
    store: Store, apply: Callable[[PolicyConfig], None], retry_s: float = 1.0
) -> None:
    """List + watch `/slinfer/policy`, calling `apply` with every valid version (a task)."""
    while True:
        try:
            entries, revision = await store.list(keys.POLICY)
            current = next((e.value for e in entries if e.key == keys.POLICY), None)
            _apply(apply, current)
            async for ev in store.watch(keys.POLICY, revision + 1):
                if ev.key == keys.POLICY:
                    _apply(apply, ev.value)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("policy watch interrupted ({}); listing again", exc)
            await asyncio.sleep(retry_s)


def _apply(apply: Callable[[PolicyConfig], None], value: dict | None) -> None:
    if value is None:
        apply(DEFAULT_CONFIG)
        return
    try:
        config = PolicyConfig.from_dict(value)
    except (ValueError, TypeError) as exc:  # a bad document must not stop the worker
        logger.warning("ignoring invalid policy config at {}: {}", keys.POLICY, exc)
        return
    apply(config)
