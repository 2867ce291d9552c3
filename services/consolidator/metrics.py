"""Prometheus metrics of the consolidator (module-level: one registry per process)."""

from prometheus_client import Counter, Gauge

from slinfer.services.common.metric_buckets import name

PLANS = Counter(
    name("consolidator_plans"),
    "Consolidation plans by kind and outcome (executed, advisory, failed)",
    ["kind", "outcome"],
)
REQUESTS_MOVED = Counter(
    name("consolidator_requests_moved"),
    "In-flight requests handed back to their schedulers for re-dispatch",
)
LEADER = Gauge(name("consolidator_leader"), "1 while this replica is the elected leader")
NODES_IN_USE = Gauge(name("nodes_in_use"), "Nodes hosting at least one instance")
