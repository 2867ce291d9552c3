"""The consolidator's policy view, built from etcd alone (it owns no requests).

Requests are never stored in etcd, but every busy instance has a token-budget lease written by
each scheduler that owns requests on it (`/slinfer/leases/{node}/{instance}/{scheduler}`),
listing each
request's arrival, SLOs, token counts and last re-dispatch. From those the consolidator
rebuilds the same plain views the scheduler builds (live_view.ViewBuilder, with the devices'
own measurements and the shared Ō) and hands them to the policy core. Token counts in a lease
are as of its last write (a request's admission or first token), so the consolidator's
contexts may trail the scheduler's by the tokens decoded since.
"""

from __future__ import annotations

from typing import Any

from slinfer.policy import DEFAULT_CONFIG, DeviceKind, DeviceView, InstanceView
from slinfer.services.cluster.live_view import ViewBuilder, device_view, label_of
from slinfer.services.cluster.state import ClusterView
from slinfer.services.cluster.tracker import Tracker, request_from_lease

__all__ = ["ConsolidationView", "request_from_lease", "tracker_from_leases"]


def tracker_from_leases(cluster: ClusterView, prior_output_tokens: float) -> Tracker:
    tracker = Tracker(prior_output_tokens=prior_output_tokens)
    for iid in cluster.leases:
        if iid not in cluster.instances:
            continue
        for rid, entry in cluster.lease_requests(iid).items():
            tracker.attach(request_from_lease(rid, entry), iid)
    return tracker


class ConsolidationView:
    """Builds the policy's views for one consolidation step."""

    def __init__(self, kv_tokens_default: int = 4096) -> None:
        self.builder = ViewBuilder()
        self.kv_tokens_default = kv_tokens_default
        self.prior_output_tokens = DEFAULT_CONFIG.prior_output_tokens

    def instance(self, cluster: ClusterView, instance_id: str) -> InstanceView | None:
        rec = cluster.instances.get(instance_id)
        if rec is None:
            return None
        tracker = tracker_from_leases(cluster, self.prior_output_tokens)
        label = label_of(cluster, rec.node_id)
        return self.builder.instance_view(cluster, tracker, rec, label, {}, self.kv_tokens_default)

    def pools(self, cluster: ClusterView) -> dict[DeviceKind, list[DeviceView]]:
        """Every node that is not draining and whose instances all have a view, by pool.

        A node with an instance the policy cannot see (no profile yet, or its model deleted)
        is left out entirely: packing must neither empty it nor count on its room.
        """
        tracker = tracker_from_leases(cluster, self.prior_output_tokens)
        specs: dict[str, Any] = {}
        out: dict[DeviceKind, list[DeviceView]] = {DeviceKind.CPU: [], DeviceKind.GPU: []}
        for node_id, node in sorted(cluster.nodes.items()):
            if node_id in cluster.drains:
                continue
            views: list[InstanceView] = []
            complete = True
            for rec in cluster.instances_on(node_id):
                iv = self.builder.instance_view(
                    cluster, tracker, rec, node.label, specs, self.kv_tokens_default
                )
                if iv is None:
                    complete = False
                    break
                views.append(iv)
            if complete:
                device = device_view(node_id, node, tuple(views))
                out[device.kind].append(device)
        return out
