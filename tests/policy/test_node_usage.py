"""NodeUsage: the time-weighted number of nodes hosting instances (bench avg_nodes)."""

from __future__ import annotations

import pytest

from slinfer.services.cluster.state import ClusterView
from slinfer.services.common.records import InstanceRecord, InstanceState, NodeRecord
from slinfer.services.consolidator.occupancy import NodeUsage


def _view(*placements: tuple[str, str]) -> ClusterView:
    view = ClusterView()
    for node in ("cpu-0", "cpu-1"):
        view.nodes[node] = NodeRecord(node_id=node, address=f"{node}:1")
    for iid, node in placements:
        view.instances[iid] = InstanceRecord(iid, "m", node, InstanceState.READY)
    return view


def test_time_weighted_average_of_nodes_in_use() -> None:
    views = iter([_view(("a", "cpu-0"), ("b", "cpu-1")), _view(("a", "cpu-0")), _view()])
    current = {"v": next(views)}
    usage = NodeUsage(lambda: current["v"])
    assert usage.sample(0.0) == 2  # two nodes for 1 s
    current["v"] = next(views)
    assert usage.sample(1.0) == 1  # one node for 3 s
    current["v"] = next(views)
    assert usage.sample(4.0) == 0
    assert usage.avg_nodes == pytest.approx((2 * 1 + 1 * 3) / 4)
    assert usage.peak == 2


def test_same_node_counts_once() -> None:
    usage = NodeUsage(lambda: _view(("a", "cpu-0"), ("b", "cpu-0")))
    usage.sample(0.0)
    usage.sample(2.0)
    assert usage.avg_nodes == 1.0
