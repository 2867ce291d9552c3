"""GetClusterStatus: the etcd view joined with each worker's live statistics."""

from __future__ import annotations

import asyncio

import grpc

from slinfer.services.common.convert import DEVICE_FROM_NAME
from slinfer.services.scheduler.state import ClusterView
from slinfer.services.scheduler.workers import WorkerClients
from slinfer.v1 import common_pb2, gateway_pb2, worker_pb2

_STATES = {
    "loading": common_pb2.INSTANCE_STATE_LOADING,
    "ready": common_pb2.INSTANCE_STATE_READY,
    "draining": common_pb2.INSTANCE_STATE_DRAINING,
    "unloading": common_pb2.INSTANCE_STATE_UNLOADING,
    "failed": common_pb2.INSTANCE_STATE_FAILED,
}


async def _stats(workers: WorkerClients, address: str) -> worker_pb2.WorkerStats | None:
    try:
        return await workers.stub(address).Stats(worker_pb2.StatsRequest(), timeout=2.0)
    except grpc.aio.AioRpcError:
        return None


async def cluster_status(view: ClusterView, workers: WorkerClients) -> gateway_pb2.ClusterStatus:
    nodes = sorted(view.nodes.values(), key=lambda n: n["node_id"])
    live = await asyncio.gather(*(_stats(workers, n["address"]) for n in nodes))
    out = gateway_pb2.ClusterStatus()
    seen: set[str] = set()
    for node, stats in zip(nodes, live, strict=True):
        if stats is not None:
            out.nodes.append(stats.node)
            out.instances.extend(stats.instances)
            seen.update(i.instance_id for i in stats.instances)
        else:
            out.nodes.append(
                common_pb2.NodeStatus(
                    node_id=node["node_id"],
                    kind=DEVICE_FROM_NAME.get(node.get("kind", ""), 0),
                    address=node.get("address", ""),
                    cores=int(node.get("cores", 0)),
                    memory_bytes=int(node.get("memory_bytes", 0)),
                    instances=len(view.instances_on(node["node_id"])),
                    reachable=False,
                )
            )
    for iid, inst in sorted(view.instances.items()):
        if iid in seen:
            continue
        out.instances.append(
            common_pb2.InstanceStatus(
                instance_id=iid,
                model_id=inst.get("model_id", ""),
                node_id=inst.get("node_id", ""),
                state=_STATES.get(inst.get("state", ""), 0),
                kv_capacity_tokens=int(inst.get("kv_capacity_tokens", 0)),
                weights_bytes=int(inst.get("weights_bytes", 0)),
                load_s=float(inst.get("load_s", 0.0)),
            )
        )
    for n in out.nodes:
        n.draining = n.node_id in view.drains
    out.services.extend(sorted(view.services))
    return out
