"""Keep-alive (scale to zero, DESIGN.md §4): unload instances idle past their keep-alive.

The decision is the policy core's `reclaim_due` (the simulator's too), on the instance as the
scheduler sees it: idle since its last use, with its model's keep-alive (the deploy's
`keep_alive_s`, else the scheduler's default). An instance whose model was deleted goes at
once. With several scheduler replicas, each sees its own use of an instance (and the others'
leases), so the unload carries the keep-alive and the worker, which sees every use, refuses
it for an instance busy or used more recently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
from loguru import logger

from slinfer.policy import InstancePhase
from slinfer.policy.keep_alive import reclaim_due
from slinfer.services.common.records import InstanceState
from slinfer.services.scheduler import metrics
from slinfer.v1 import worker_pb2

if TYPE_CHECKING:
    from slinfer.services.scheduler.dispatch import Dispatcher


async def reclaim_idle(
    dispatcher: Dispatcher, default_keep_alive_s: float, now: float
) -> list[str]:
    """Unload ready instances idle past their model's keep-alive (`now`: monotonic)."""
    view = dispatcher.watcher.view
    unloaded = []
    for iid, inst in list(view.instances.items()):
        if inst.state is not InstanceState.READY or dispatcher.tracker.busy(iid):
            continue
        model = view.models.get(inst.model_id)
        last = dispatcher.last_used.setdefault(iid, now)
        keep_alive = 0.0
        if model is not None:
            configured = model.keep_alive_s
            keep_alive = default_keep_alive_s if configured is None else configured
            if not reclaim_due(0, InstancePhase.READY, last, keep_alive, now):
                continue
        node = view.nodes.get(inst.node_id)
        if node is None:
            continue
        try:
            # The worker checks the instance is idle for the keep-alive too: it sees every
            # scheduler replica's use of it, this scheduler only its own.
            await dispatcher.workers.stub(node.address).UnloadInstance(
                worker_pb2.UnloadInstanceRequest(instance_id=iid, min_idle_s=keep_alive),
                timeout=dispatcher.config.rpc_timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                dispatcher.last_used[iid] = now  # in use elsewhere: look again later
            else:
                logger.warning("keep-alive unload of {} failed: {}", iid, exc.details())
            continue
        dispatcher.last_used.pop(iid, None)
        metrics.UNLOADS.labels(inst.model_id).inc()
        unloaded.append(iid)
        logger.info("scaled to zero: instance={} model={}", iid, inst.model_id)
    return unloaded
