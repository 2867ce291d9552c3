"""The worker's Stats answer: node and instance status from the engines' last figures."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from slinfer.services.common.convert import DEVICE_TO_PB, ENGINE_TO_PB, INSTANCE_STATE_TO_PB
from slinfer.services.worker.instance import Instance
from slinfer.v1 import common_pb2, worker_pb2

if TYPE_CHECKING:
    from slinfer.services.worker.memory_agent import MemoryAgent
    from slinfer.services.worker.node import NodeContext


def instance_status(node_id: str, inst: Instance) -> common_pb2.InstanceStatus:
    s = inst.stats
    return common_pb2.InstanceStatus(
        instance_id=inst.instance_id,
        model_id=inst.model_id,
        node_id=node_id,
        state=INSTANCE_STATE_TO_PB[inst.state],
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
    )


def worker_stats(node: NodeContext, memory: MemoryAgent) -> worker_pb2.WorkerStats:
    rec = node.node_record()
    status = common_pb2.NodeStatus(
        node_id=node.node_id,
        kind=DEVICE_TO_PB[rec.kind],
        address=node.address,
        cores=rec.cores,
        memory_bytes=node.config.memory_bytes,
        memory_used_bytes=memory.used_bytes(),
        memory_ledger_bytes=memory.ledger_bytes(),
        instances=len(node.instances),
        reachable=True,
    )
    return worker_pb2.WorkerStats(
        node=status,
        instances=[instance_status(node.node_id, i) for i in node.instances.values()],
    )
