"""Prometheus metrics of the HTTP front (served on its own port at /metrics)."""

from prometheus_client import Counter, Histogram

from slinfer.services.common.metric_buckets import REQUEST_LATENCY_BUCKETS, name

REQUESTS = Counter(
    name("http_requests"), "HTTP API calls by endpoint and status code", ["endpoint", "status"]
)
DURATION = Histogram(
    name("http_request_duration_seconds"),
    "HTTP API call duration, to the last byte of the answer",
    ["endpoint"],
    buckets=REQUEST_LATENCY_BUCKETS,
)
DISCONNECTS = Counter(
    name("http_client_disconnects"),
    "Calls whose client left before the answer ended (the gRPC call is cancelled)",
    ["endpoint"],
)
