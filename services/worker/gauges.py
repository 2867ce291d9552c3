"""The worker's level metrics, refreshed once a second from the engines' last statistics."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from slinfer.services.worker import metrics

if TYPE_CHECKING:
    from slinfer.services.worker.server import WorkerService

PERIOD_S = 1.0


class WorkerGauges:
    def __init__(self, worker: WorkerService):
        self.worker = worker
        self._pressure_seen: dict[str, int] = {}  # instance -> kv_pressure_events counted

    def refresh(self) -> None:
        w = self.worker
        used: dict[str, int] = {}
        capacity: dict[str, int] = {}
        kv_bytes = 0
        for iid, inst in list(w.instances.items()):
            s = inst.stats
            if s is None:
                continue
            model = inst.model_id
            used[model] = used.get(model, 0) + s.kv_used_tokens
            capacity[model] = capacity.get(model, 0) + s.kv_capacity_tokens
            kv_bytes += s.kv_bytes_allocated
            new = s.kv_pressure_events - self._pressure_seen.get(iid, 0)
            if new > 0:
                metrics.PREEMPTIONS.labels(model).inc(new)
            self._pressure_seen[iid] = s.kv_pressure_events
        for iid in set(self._pressure_seen) - set(w.instances):
            del self._pressure_seen[iid]
        for model in {*capacity, *_labelled_models()}:
            cap = capacity.get(model, 0)
            metrics.KV_USAGE.labels(model).set(used.get(model, 0) / cap if cap else 0.0)
        metrics.KV_BYTES.labels(w.node_id).set(kv_bytes)
        metrics.INSTANCES.labels(w.node_id).set(len(w.instances))

    async def run(self) -> None:
        while True:
            self.refresh()
            await asyncio.sleep(PERIOD_S)


def _labelled_models() -> set[str]:
    """Models that have a KV-usage series already (an unloaded model's usage drops to 0)."""
    return {labels[0] for labels in metrics.KV_USAGE._metrics}  # noqa: SLF001
