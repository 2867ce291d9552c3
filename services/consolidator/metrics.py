"""Prometheus metrics of the consolidator (module-level: one registry per process)."""

from prometheus_client import Counter, Gauge

PLANS = Counter(
    "slinfer_consolidator_plans_total",
    "Consolidation plans by kind and outcome (executed, advisory, failed)",
    ["kind", "outcome"],
)
REQUESTS_MOVED = Counter(
    "slinfer_consolidator_requests_moved_total",
    "In-flight requests handed back to their schedulers for re-dispatch",
)
LEADER = Gauge("slinfer_consolidator_leader", "1 while this replica is the elected leader")
NODES_IN_USE = Gauge("slinfer_consolidator_nodes_in_use", "Nodes hosting at least one instance")
