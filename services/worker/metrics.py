"""Prometheus metrics of a worker (module-level: one registry per process)."""

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "slinfer_worker_requests_total", "Requests finished on this worker", ["model", "status"]
)
ITERATION_SECONDS = Histogram(
    "slinfer_worker_iteration_seconds",
    "Duration of one engine iteration",
    ["phase"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_SIZE = Histogram(
    "slinfer_worker_batch_size",
    "Requests in one iteration's forward pass",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
INSTANCES = Gauge("slinfer_worker_instances", "Instances loaded on this node", ["node"])
LOAD_SECONDS = Histogram(
    "slinfer_worker_load_seconds",
    "Time to load an instance's weights",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
KV_BYTES = Gauge("slinfer_worker_kv_bytes", "KV bytes allocated on this node", ["node"])
ARBITER_SECONDS = Histogram(
    "slinfer_worker_arbiter_seconds",
    "Cost of one arbitration (building the device view + the EDF decision)",
    buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2),
)
GRANTS = Counter("slinfer_worker_grants_total", "Iteration grants by the arbiter", ["model"])
ARBITER_OVERHEAD = Gauge(
    "slinfer_worker_arbiter_overhead_ratio",
    "Arbiter time / engine iteration time since start, per node",
    ["node"],
)
