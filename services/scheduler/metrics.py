"""Prometheus metrics of the scheduler/gateway (module-level: one registry per process)."""

from prometheus_client import Counter, Gauge, Histogram

_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)

REQUESTS = Counter(
    "slinfer_gateway_requests_total", "Generate calls by final status", ["model", "status"]
)
TTFT = Histogram("slinfer_gateway_ttft_seconds", "Time to first token", ["model"], buckets=_LATENCY)
TPOT = Histogram(
    "slinfer_gateway_tpot_seconds",
    "Mean time per output token after the first",
    ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2),
)
INSTANCES = Gauge("slinfer_gateway_instances", "Instances per node (etcd view)", ["node"])
COLD_STARTS = Counter(
    "slinfer_gateway_cold_starts_total", "Instances started for a request", ["model"]
)
UNLOADS = Counter("slinfer_gateway_keep_alive_unloads_total", "Idle instances unloaded", ["model"])
DECISIONS = Counter(
    "slinfer_gateway_admission_decisions_total",
    "Admission decisions (each retry of a waiting request counts), by kind and reason",
    ["kind", "reason"],
)
REDISPATCHES = Counter(
    "slinfer_gateway_redispatches_total",
    "Requests re-dispatched mid-stream after their instance was preempted or drained",
    ["model"],
)
PREEMPTION_PLANS = Counter(
    "slinfer_gateway_preemption_plans_total",
    "Preemption plans asked of the consolidator, by whether it carried one out",
    ["model", "executed"],
)
ADMIT_SECONDS = Histogram(
    "slinfer_gateway_admit_seconds",
    "Gateway arrival to the first submission to a worker (parse, tokenise, admit, wait)",
    ["model"],
    buckets=_LATENCY,
)
WORKER_FIRST_TOKEN_SECONDS = Histogram(
    "slinfer_gateway_worker_first_token_seconds",
    "Submission to a worker to its first token, as the gateway sees it",
    ["model"],
    buckets=_LATENCY,
)
SLO_MARGIN = Gauge(
    "slinfer_gateway_slo_margin",
    "Fraction of each SLO admission aims at now (the configured margin, tightened while first "
    "tokens come later than aimed: scheduler/slo_guard.py)",
)
