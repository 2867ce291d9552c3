"""The consolidator's policy view, built from etcd alone (it owns no requests).

Requests are never stored in etcd, but every busy instance has a token-budget lease written by
the scheduler that owns its requests (`/slinfer/leases/{node}/{instance}`), listing each
request's arrival, SLOs and token counts. From those the consolidator rebuilds the same plain
views the scheduler builds (live_view.ViewBuilder) and hands them to the policy core. Token
counts in a lease are as of its last write (a request's admission or first token), so the
consolidator's contexts may trail the scheduler's by the tokens decoded since.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from slinfer.policy import DeviceKind, DeviceView, DispatchView, InstanceView
from slinfer.services.scheduler.live_view import ViewBuilder
from slinfer.services.scheduler.state import ClusterView
from slinfer.services.scheduler.tracker import LiveRequest, Tracker


def request_from_lease(rid: str, entry: Mapping[str, Any]) -> LiveRequest:
    return LiveRequest(
        request_id=rid,
        model_id="",
        arrival_s=float(entry.get("arrival_s", 0.0)),
        input_tokens=int(entry.get("input_tokens", 0)),
        ttft_slo_s=float(entry.get("ttft_slo_s", 0.0)),
        tpot_slo_s=float(entry.get("tpot_slo_s", 0.25)),
        excused_s=float(entry.get("excused_s", 0.0)),
        output_tokens=int(entry.get("output_tokens", 0)),
    )


def tracker_from_leases(cluster: ClusterView, prior_output_tokens: float = 128.0) -> Tracker:
    tracker = Tracker(prior_output_tokens=prior_output_tokens)
    for iid, lease in cluster.leases.items():
        if iid not in cluster.instances:
            continue
        for rid, entry in (lease.get("requests") or {}).items():
            tracker.attach(request_from_lease(rid, entry), iid)
    return tracker


class ConsolidationView:
    """Builds the policy's views for one consolidation cycle."""

    def __init__(self, kv_tokens_default: int = 4096) -> None:
        self.builder = ViewBuilder()
        self.kv_tokens_default = kv_tokens_default

    def dispatch_view(self, cluster: ClusterView, model: Mapping[str, Any]) -> DispatchView:
        """The scheduler's view of one model (draining nodes left out, as it does)."""
        tracker = tracker_from_leases(cluster)
        return self.builder.build(cluster, tracker, model, [], self.kv_tokens_default)

    def pools(self, cluster: ClusterView) -> dict[DeviceKind, list[DeviceView]]:
        """Every node that is not draining and whose instances all have a view, by pool.

        A node with an instance the policy cannot see (no profile yet, or its model deleted)
        is left out entirely: packing must neither empty it nor count on its room.
        """
        tracker = tracker_from_leases(cluster)
        specs: dict[str, Any] = {}
        out: dict[DeviceKind, list[DeviceView]] = {DeviceKind.CPU: [], DeviceKind.GPU: []}
        for node_id, node in sorted(cluster.nodes.items()):
            if node_id in cluster.drains:
                continue
            kind = node.get("kind", "cpu")
            label = node.get("label", kind)
            views: list[InstanceView] = []
            complete = True
            for rec in cluster.instances_on(node_id):
                iv = self.builder.instance_view(
                    cluster, tracker, rec, label, specs, self.kv_tokens_default
                )
                if iv is None:
                    complete = False
                    break
                views.append(iv)
            if not complete:
                continue
            device_kind = DeviceKind.GPU if kind == "gpu" else DeviceKind.CPU
            out[device_kind].append(
                DeviceView(
                    node_id, device_kind, label, int(node.get("memory_bytes", 0)), tuple(views)
                )
            )
        return out
