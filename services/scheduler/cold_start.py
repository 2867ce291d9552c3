"""Cold starts: a new instance loads on a worker while its first requests wait for it.

The load is asked of the worker (`LoadInstance`), and the instance counts as LOADING for
admission meanwhile, joining its device at its predicted ready time (the node's measured load
throughput, DESIGN.md §2). Requests attached to it wait for the load; the time they waited is
excused, as the paper counts TTFT. The first instance of a model never profiled is placed by
memory alone (placement_live.py): its worker measures the model's tables at load.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from slinfer.services.cluster.live_view import PendingLoad
from slinfer.services.cluster.state import ClusterWatcher
from slinfer.services.cluster.workers import WorkerClients
from slinfer.services.common.convert import ENGINE_TO_PB, WEIGHTS_TO_PB
from slinfer.services.common.errors import WorkerUnavailable
from slinfer.services.common.records import InstanceState, ModelRecord
from slinfer.services.scheduler import metrics
from slinfer.services.scheduler.dispatch_config import DispatchConfig
from slinfer.services.scheduler.placement_live import candidate_nodes
from slinfer.v1 import common_pb2, worker_pb2


class ColdStarts:
    def __init__(
        self, watcher: ClusterWatcher, workers: WorkerClients, config: DispatchConfig
    ) -> None:
        self.watcher, self.workers, self.config = watcher, workers, config
        self.pending: dict[str, PendingLoad] = {}  # loads etcd does not show yet
        self.last_used: dict[str, float] = {}  # instance -> monotonic time of last use
        self._loads: dict[str, asyncio.Task[float]] = {}

    def start(self, model: ModelRecord, node_id: str, kv_tokens: int) -> str:
        """Ask for a new instance of `model` on `node_id`; returns its id at once."""
        model_id = model.model_id
        iid = f"{model_id[:48]}-{uuid.uuid4().hex[:8]}"
        self.pending[iid] = PendingLoad(iid, model_id, node_id, kv_tokens, time.time())
        task = asyncio.create_task(self._load(model, iid, node_id, kv_tokens), name=f"load:{iid}")
        self._loads[iid] = task

        def _done(_t: asyncio.Task[float]) -> None:
            self._loads.pop(iid, None)
            self.pending.pop(iid, None)

        task.add_done_callback(_done)
        return iid

    def loading_of(self, model_id: str) -> str | None:
        """A first load of the model already asked for (bootstrap requests share it)."""
        return next((p.instance_id for p in self.pending.values() if p.model_id == model_id), None)

    def loads_of(self, model_id: str) -> int:
        """Loads of the model this scheduler has under way (bounded churn)."""
        return sum(1 for p in self.pending.values() if p.model_id == model_id)

    def bootstrap_node(self, model: ModelRecord, kv_tokens: int) -> str | None:
        """Where the first instance of a model never profiled goes (by memory alone)."""
        nodes = candidate_nodes(self.watcher.view, model, kv_tokens)
        return nodes[0].node_id if nodes else None

    def node_of(self, instance_id: str) -> str | None:
        rec = self.watcher.view.instances.get(instance_id)
        if rec is not None:
            return rec.node_id
        pending = self.pending.get(instance_id)
        return pending.node_id if pending else None

    async def _load(self, model: ModelRecord, iid: str, node_id: str, kv_tokens: int) -> float:
        node = self.watcher.view.nodes[node_id]
        req = worker_pb2.LoadInstanceRequest(
            instance_id=iid,
            model_id=model.model_id,
            path=model.path,
            engine=ENGINE_TO_PB[model.engine] if model.engine else common_pb2.ENGINE_KIND_AUTO,
            kv_capacity_tokens=kv_tokens,
            weights=WEIGHTS_TO_PB[model.weights],
        )
        t0 = time.monotonic()
        await self.workers.stub(node.address).LoadInstance(req, timeout=self.config.load_timeout_s)
        metrics.COLD_STARTS.labels(model.model_id).inc()
        self.last_used[iid] = time.monotonic()
        # The worker's etcd record may trail its answer: wait briefly so routing sees it.
        await self.watcher.wait_for(lambda v: v.state_of(iid) is InstanceState.READY, 5.0)
        return time.monotonic() - t0

    async def await_ready(self, iid: str) -> float:
        """Wait for an instance to be ready; returns the seconds waited (excused)."""
        task = self._loads.get(iid)
        if task is None and self.watcher.view.state_of(iid) is InstanceState.READY:
            return 0.0
        t0 = time.monotonic()
        if task is not None:
            await asyncio.shield(task)
        else:
            ok = await self.watcher.wait_for(
                lambda v: v.state_of(iid) is not InstanceState.LOADING,
                self.config.load_timeout_s,
            )
            if not ok:
                raise WorkerUnavailable(f"instance {iid} did not finish loading")
        return time.monotonic() - t0
