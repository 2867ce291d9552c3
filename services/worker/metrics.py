"""Prometheus metrics of a worker (module-level: one registry per process).

`kv_cache_usage_perc` and `num_preemptions` carry vLLM's names under `slinfer:`; the rest
are slinfer's own. docs/METRICS.md lists them.
"""

from prometheus_client import Counter, Gauge, Histogram

from slinfer.services.common.metric_buckets import MODEL, name

KV_USAGE = Gauge(
    name("kv_cache_usage_perc"),
    "KV-cache usage of the model's instances on this node (1 = full)",
    [MODEL],
)
PREEMPTIONS = Counter(
    name("num_preemptions"),
    "Requests the engine preempted (recompute) or cut short because the KV pool was full",
    [MODEL],
)
REQUESTS = Counter(
    name("worker_requests"), "Requests finished on this worker, by status", [MODEL, "status"]
)
ITERATION_SECONDS = Histogram(
    name("worker_iteration_seconds"),
    "Duration of one engine iteration",
    ["phase"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_SIZE = Histogram(
    name("worker_batch_size"),
    "Requests in one iteration's forward pass",
    [MODEL],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
DEVICE_SECONDS = Counter(
    name("device_busy_seconds"),
    "Device time spent in each model's iterations (its rate is the time slice it used)",
    ["node", MODEL],
)
INSTANCES = Gauge(name("worker_instances"), "Instances loaded on this node", ["node"])
LOAD_SECONDS = Histogram(
    name("model_load_seconds"),
    "Time to load an instance (a cold start's loading part)",
    [MODEL],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
KV_BYTES = Gauge(name("worker_kv_bytes"), "KV bytes allocated on this node", ["node"])
ARBITER_SECONDS = Histogram(
    name("worker_arbiter_seconds"),
    "Cost of one arbitration (building the device view + the EDF decision)",
    buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2),
)
GRANTS = Counter(name("worker_grants"), "Iteration grants by the arbiter", [MODEL])
ARBITER_OVERHEAD = Gauge(
    name("worker_arbiter_overhead_ratio"),
    "Arbiter time / engine iteration time since start, per node",
    ["node"],
)
