"""Prometheus metrics of the memory service (module-level: one registry per process)."""

from prometheus_client import Counter, Gauge

from slinfer.services.common.metric_buckets import name

LEDGER_BYTES = Gauge(
    name("ledger_bytes"),
    "Per node: bytes the ledger has planned (approved), actual (completed) and the worker "
    "reported allocating, and the node's capacity",
    ["node", "kind"],
)
LEDGER_CHANGES = Counter(
    name("ledger_changes"),
    "Ledger change requests by operation and answer (applied, deferred, rejected, stale, conflict)",
    ["op", "status"],
)
