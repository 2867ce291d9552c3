"""Keep the arbiter's table of this node's token-budget leases in sync with etcd.

Leases are written by the scheduler under its own etcd lease (TTL), so a vanished
scheduler's budgets disappear by themselves; list + watch, relist on any interruption.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from loguru import logger

from slinfer.services.common import keys
from slinfer.services.common.store import Store
from slinfer.services.worker.arbiter import LeaseTable


async def watch_leases(
    store: Store, node_id: str, table: LeaseTable, wake: Callable[[], None]
) -> None:
    prefix = keys.node_leases(node_id)
    while True:
        try:
            entries, revision = await store.list(prefix)
            table.leases = {keys.tail(e.key, prefix): e.value for e in entries}
            wake()
            async for ev in store.watch(prefix, revision + 1):
                iid = keys.tail(ev.key, prefix)
                if ev.value is None:
                    table.leases.pop(iid, None)
                    logger.info("lease of instance={} expired or released", iid)
                else:
                    table.leases[iid] = ev.value
                wake()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("lease watch interrupted ({}); listing again", exc)
            await asyncio.sleep(0.5)
