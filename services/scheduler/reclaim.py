"""Keep-alive (scale to zero, DESIGN.md §4): unload instances idle past their model's keep-alive."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
from loguru import logger

from slinfer.services.scheduler import metrics
from slinfer.v1 import worker_pb2

if TYPE_CHECKING:
    from slinfer.services.scheduler.dispatch import Dispatcher


async def reclaim_idle(
    dispatcher: Dispatcher, default_keep_alive_s: float, now: float
) -> list[str]:
    """Unload ready instances idle past their model's keep-alive."""
    view = dispatcher.watcher.view
    unloaded = []
    for iid, inst in list(view.instances.items()):
        if inst.get("state") != "ready" or dispatcher.tracker.busy(iid):
            continue
        model = view.models.get(inst.get("model_id", ""))
        configured = model.get("keep_alive_s") if model else 0.0
        keep_alive = default_keep_alive_s if configured is None else float(configured)
        last = dispatcher.last_used.setdefault(iid, now)
        if model is not None and now - last < keep_alive:
            continue
        node = view.nodes.get(inst.get("node_id", ""))
        if node is None:
            continue
        try:
            await dispatcher.workers.stub(node["address"]).UnloadInstance(
                worker_pb2.UnloadInstanceRequest(instance_id=iid),
                timeout=dispatcher.config.rpc_timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            logger.warning("keep-alive unload of {} failed: {}", iid, exc.details())
            continue
        dispatcher.last_used.pop(iid, None)
        metrics.UNLOADS.labels(inst.get("model_id", "")).inc()
        unloaded.append(iid)
        logger.info("scaled to zero: instance={} model={}", iid, inst.get("model_id"))
    return unloaded
