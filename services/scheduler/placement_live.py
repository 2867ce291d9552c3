"""Candidate nodes for a new instance, most loaded first (DESIGN.md §4 placement).

Builds the plain view (node capacity, committed bytes) from the etcd records and orders
nodes: the requested pool only, or the CPU pool before the GPU pool for AUTO; within a pool,
the node with the least free memory that still fits comes first, empty nodes last.
"""

from __future__ import annotations

from slinfer.policy import DeviceKind
from slinfer.services.cluster.state import ClusterView
from slinfer.services.common.engine_types import EngineKind
from slinfer.services.common.model_dir import inspect_model_dir, node_dtype_bytes
from slinfer.services.common.records import ModelRecord, NodeRecord


def committed_bytes(view: ClusterView, node_id: str) -> int:
    return sum(inst.footprint_bytes for inst in view.instances_on(node_id))


def candidate_nodes(view: ClusterView, model: ModelRecord, kv_tokens: int) -> list[NodeRecord]:
    info = inspect_model_dir(model.path)
    pools = [model.device] if model.device else [DeviceKind.CPU, DeviceKind.GPU]
    ordered: list[NodeRecord] = []
    for pool in pools:
        if pool is DeviceKind.GPU and model.engine is EngineKind.TORCH:
            continue  # the PyTorch engine runs on CPU nodes only
        fits = []
        for node in view.nodes.values():
            if node.kind is not pool or view.unavailable(node.node_id):
                continue
            free = node.memory_bytes - committed_bytes(view, node.node_id)
            if free >= info.estimate_bytes(kv_tokens, node_dtype_bytes(node)):
                empty = not view.instances_on(node.node_id)
                fits.append((empty, free, node.node_id, node))
        ordered.extend(n for *_k, n in sorted(fits, key=lambda t: (t[0], t[1], t[2])))
    return ordered
