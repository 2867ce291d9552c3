"""Candidate nodes for a new instance, most loaded first (DESIGN.md §4 placement).

Builds the plain view (node capacity, committed bytes) from the etcd records and orders
nodes: the requested pool only, or the CPU pool before the GPU pool for AUTO; within a pool,
the node with the least free memory that still fits comes first, empty nodes last.
"""

from __future__ import annotations

from typing import Any

from slinfer.services.cluster.state import ClusterView
from slinfer.services.common.model_dir import inspect_model_dir, node_dtype_bytes


def committed_bytes(view: ClusterView, node_id: str) -> int:
    total = 0
    for inst in view.instances_on(node_id):
        total += int(inst.get("weights_bytes", 0))
        total += int(inst.get("kv_capacity_tokens", 0)) * int(inst.get("kv_bytes_per_token", 0))
    return total


def candidate_nodes(
    view: ClusterView, model: dict[str, Any], kv_tokens: int
) -> list[dict[str, Any]]:
    info = inspect_model_dir(model["path"])
    device = model.get("device") or None
    engine = model.get("engine") or None
    pools = [device] if device else ["cpu", "gpu"]
    ordered: list[dict[str, Any]] = []
    for pool in pools:
        if pool == "gpu" and engine == "torch":
            continue  # the PyTorch engine runs on CPU nodes only
        fits = []
        for node in view.nodes.values():
            if node.get("kind") != pool or view.unavailable(node["node_id"]):
                continue
            free = int(node.get("memory_bytes", 0)) - committed_bytes(view, node["node_id"])
            if free >= info.estimate_bytes(kv_tokens, node_dtype_bytes(node)):
                empty = not view.instances_on(node["node_id"])
                fits.append((empty, free, node["node_id"], node))
        ordered.extend(n for *_k, n in sorted(fits, key=lambda t: (t[0], t[1], t[2])))
    return ordered
