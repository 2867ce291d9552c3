"""Prometheus metrics of the scheduler/gateway (module-level: one registry per process).

Per-request latencies and token counts carry vLLM's names and buckets under `slinfer:`
(services/common/metric_buckets.py); the rest are slinfer's own. docs/METRICS.md lists them.
"""

from prometheus_client import Counter, Gauge, Histogram

from slinfer.services.common.metric_buckets import (
    INTER_TOKEN_LATENCY_BUCKETS,
    MODEL,
    REQUEST_LATENCY_BUCKETS,
    TIME_TO_FIRST_TOKEN_BUCKETS,
    name,
)

# ---- vLLM-named, per model ------------------------------------------------------------------

TTFT = Histogram(
    name("time_to_first_token_seconds"),
    "Arrival at the gateway to the first token, cold start included",
    [MODEL],
    buckets=TIME_TO_FIRST_TOKEN_BUCKETS,
)
INTER_TOKEN = Histogram(
    name("inter_token_latency_seconds"),
    "Time between consecutive output tokens",
    [MODEL],
    buckets=INTER_TOKEN_LATENCY_BUCKETS,
)
TPOT = Histogram(
    name("request_time_per_output_token_seconds"),
    "Mean time per output token after the first, per request",
    [MODEL],
    buckets=INTER_TOKEN_LATENCY_BUCKETS,
)
E2E = Histogram(
    name("e2e_request_latency_seconds"),
    "Arrival at the gateway to the last token",
    [MODEL],
    buckets=REQUEST_LATENCY_BUCKETS,
)
QUEUE_TIME = Histogram(
    name("request_queue_time_seconds"),
    "Arrival at the gateway to submission to an instance (admission wait and cold start)",
    [MODEL],
    buckets=REQUEST_LATENCY_BUCKETS,
)
PROMPT_TOKENS = Counter(name("prompt_tokens"), "Prompt tokens prefilled", [MODEL])
GENERATION_TOKENS = Counter(name("generation_tokens"), "Output tokens streamed", [MODEL])
REQUEST_SUCCESS = Counter(
    name("request_success"), "Requests finished, by finish reason", [MODEL, "finished_reason"]
)
RUNNING = Gauge(
    name("num_requests_running"),
    "Requests at this gateway producing tokens",
    [MODEL],
)
WAITING = Gauge(
    name("num_requests_waiting"),
    "Requests at this gateway without a first token yet (waiting for capacity, a cold "
    "start or their prefill)",
    [MODEL],
)
# ---- slinfer's own ---------------------------------------------------------------------------

REQUEST_ERRORS = Counter(
    name("request_errors"),
    "Generate calls that ended with an error, by gRPC status (cancelled: the client left)",
    [MODEL, "code"],
)
INSTANCES = Gauge(name("instances"), "Instances per node (etcd view)", ["node"])
NODES = Gauge(name("nodes"), "Registered worker nodes by kind (etcd view)", ["kind"])
TIME_SLICE = Gauge(
    name("time_slice"),
    "Time slice of each busy instance's device (the token budget the scheduler leases)",
    ["node", "instance", MODEL],
)
REDISPATCHES = Counter(
    name("redispatches"),
    "Requests re-dispatched mid-stream after their instance was preempted or drained",
    [MODEL],
)
COLD_STARTS = Counter(name("cold_starts"), "Instances started for a request", [MODEL])
UNLOADS = Counter(name("keep_alive_unloads"), "Idle instances unloaded (scale to zero)", [MODEL])
DECISIONS = Counter(
    name("admission_decisions"),
    "Admission decisions (each retry of a waiting request counts), by kind and reason",
    ["kind", "reason"],
)
PREEMPTION_PLANS = Counter(
    name("preemption_plans"),
    "Preemption plans asked of the consolidator, by whether it carried one out",
    [MODEL, "executed"],
)
SLO_MARGIN = Gauge(
    name("admission_slo_margin"),
    "Fraction of each SLO admission aims at now (the configured margin, tightened while first "
    "tokens come later than aimed: scheduler/slo_guard.py)",
)
