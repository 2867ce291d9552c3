"""Metric naming shared by every service: vLLM's names and buckets under the `slinfer:` prefix.

Dashboards written for vLLM (`vllm:time_to_first_token_seconds`, ...) work on slinfer by
swapping the prefix, so the histograms use vLLM's bucket boundaries exactly (copied from
vllm/v1/metrics/buckets.py, vLLM 0.32; tests/test_metrics.py compares them with the installed
vLLM when it is there). Colons are legal in Prometheus metric names ([a-zA-Z_:][a-zA-Z0-9_:]*)
and prometheus_client accepts them; vLLM uses the same form.
"""

from __future__ import annotations

PREFIX = "slinfer:"
MODEL = "model_name"  # vLLM's per-model label


def name(metric: str) -> str:
    return PREFIX + metric


# e2e, queue, inference, prefill and decode times (vLLM REQUEST_LATENCY_BUCKETS)
REQUEST_LATENCY_BUCKETS: tuple[float, ...] = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
TIME_TO_FIRST_TOKEN_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
INTER_TOKEN_LATENCY_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
ITERATION_TOKENS_BUCKETS: tuple[float, ...] = (
    1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384,
)  # fmt: skip
