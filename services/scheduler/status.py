"""GetClusterStatus: the etcd view joined with each worker's live statistics."""

from __future__ import annotations

import asyncio

import grpc

from slinfer.services.cluster.state import ClusterView
from slinfer.services.cluster.workers import WorkerClients
from slinfer.services.common.convert import DEVICE_TO_PB, INSTANCE_STATE_TO_PB
from slinfer.services.scheduler.request_metrics import ActiveRequests
from slinfer.v1 import common_pb2, gateway_pb2, worker_pb2


async def _stats(workers: WorkerClients, address: str) -> worker_pb2.WorkerStats | None:
    try:
        return await workers.stub(address).Stats(worker_pb2.StatsRequest(), timeout=2.0)
    except grpc.aio.AioRpcError:
        return None


def _with_etcd_figures(view: ClusterView, out: gateway_pb2.ClusterStatus) -> None:
    """Leases (time slice, batch) and the memory ledger (planned/actual) beside live stats."""
    for inst in out.instances:
        # One lease per scheduler replica; each computed the slice of the whole instance
        # (every replica's requests), so the latest figures are the largest.
        leases = (view.leases.get(inst.instance_id) or {}).values()
        inst.time_slice = max((float(x.get("time_slice") or 0.0) for x in leases), default=0.0)
        inst.batch = max((int(x.get("batch") or 0) for x in leases), default=0)
        book = view.ledgers.get(inst.node_id, {}).get("instances", {}).get(inst.instance_id, {})
        inst.kv_planned_bytes = int(book.get("planned_kv_bytes", 0))
        inst.kv_actual_bytes = int(book.get("actual_kv_bytes", 0))
    for n in out.nodes:
        n.draining = n.node_id in view.drains
        n.memory_planned_bytes = int(view.ledgers.get(n.node_id, {}).get("planned_bytes", 0))


async def cluster_status(
    view: ClusterView, workers: WorkerClients, active: ActiveRequests | None = None
) -> gateway_pb2.ClusterStatus:
    nodes = sorted(view.nodes.values(), key=lambda n: n.node_id)
    live = await asyncio.gather(*(_stats(workers, n.address) for n in nodes))
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
                    node_id=node.node_id,
                    kind=DEVICE_TO_PB[node.kind],
                    address=node.address,
                    cores=node.cores,
                    memory_bytes=node.memory_bytes,
                    instances=len(view.instances_on(node.node_id)),
                    reachable=False,
                )
            )
    for iid, inst in sorted(view.instances.items()):
        if iid in seen:
            continue
        out.instances.append(
            common_pb2.InstanceStatus(
                instance_id=iid,
                model_id=inst.model_id,
                node_id=inst.node_id,
                state=INSTANCE_STATE_TO_PB[inst.state],
                kv_capacity_tokens=inst.kv_capacity_tokens,
                weights_bytes=inst.weights_bytes,
                load_s=inst.load_s,
            )
        )
    _with_etcd_figures(view, out)
    out.services.extend(sorted(view.services))
    if active is not None:
        out.requests_waiting = active.total("waiting")
        out.requests_running = active.total("running")
    return out
