"""The worker's Stats answer: node and instance status from the engines' last figures."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from slinfer.services.common.convert import ENGINE_TO_PB, WEIGHTS_TO_PB
from slinfer.services.worker import metrics
from slinfer.services.worker.instance import Instance, InstanceState
from slinfer.v1 import common_pb2, worker_pb2

if TYPE_CHECKING:
    from slinfer.services.worker.server import WorkerService

_STATE_TO_PB = {
    InstanceState.LOADING: common_pb2.INSTANCE_STATE_LOADING,
    InstanceState.READY: common_pb2.INSTANCE_STATE_READY,
    InstanceState.DRAINING: common_pb2.INSTANCE_STATE_DRAINING,
    InstanceState.UNLOADING: common_pb2.INSTANCE_STATE_UNLOADING,
    InstanceState.FAILED: common_pb2.INSTANCE_STATE_FAILED,
}


def instance_status(node_id: str, inst: Instance) -> common_pb2.InstanceStatus:
    s = inst.stats
    return common_pb2.InstanceStatus(
        instance_id=inst.instance_id,
        model_id=inst.model_id,
        node_id=node_id,
        state=_STATE_TO_PB[inst.state],
        engine=ENGINE_TO_PB[inst.engine_kind],
        running=s.running if s else 0,
        waiting=s.waiting if s else 0,
        kv_capacity_tokens=s.kv_capacity_tokens if s else inst.kv_capacity_tokens,
        kv_used_tokens=s.kv_used_tokens if s else 0,
        kv_bytes_allocated=s.kv_bytes_allocated if s else 0,
        weights_bytes=s.weights_bytes if s else 0,
        kv_resizable=s.kv_resizable if s else False,
        load_s=inst.load_s,
        iterations=s.iterations if s else 0,
        idle_s=inst.idle_s(time.monotonic()),
        weights=WEIGHTS_TO_PB[inst.weights],
    )


def worker_stats(w: WorkerService) -> worker_pb2.WorkerStats:
    rec = w.node_record()
    used = w.memory_used_bytes()
    metrics.KV_BYTES.labels(w.node_id).set(
        sum(i.stats.kv_bytes_allocated for i in w.instances.values() if i.stats)
    )
    node = common_pb2.NodeStatus(
        node_id=w.node_id,
        kind=common_pb2.DEVICE_KIND_GPU if w.config.kind == "gpu" else common_pb2.DEVICE_KIND_CPU,
        address=w.address,
        cores=int(rec["cores"]),  # type: ignore[call-overload]
        memory_bytes=w.config.memory_bytes,
        memory_used_bytes=used,
        memory_ledger_bytes=w.memory.ledger_bytes(),
        instances=len(w.instances),
        reachable=True,
    )
    return worker_pb2.WorkerStats(
        node=node, instances=[instance_status(w.node_id, i) for i in w.instances.values()]
    )
