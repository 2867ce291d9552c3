"""Metric names: vLLM's names and buckets under `slinfer:`, the Grafana dashboard only asks
for series the services export, and docs/METRICS.md lists every metric.

The exported names come from the processes' registry (every service's metrics module
imported), not from a hand-written list.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

REPO = Path(__file__).resolve().parent.parent
SERVICES = ("scheduler", "worker", "memory", "consolidator", "http")
# vLLM metric -> (slinfer service that exports it, bucket family or None)
VLLM_NAMED = {
    "time_to_first_token_seconds": "TIME_TO_FIRST_TOKEN_BUCKETS",
    "inter_token_latency_seconds": "INTER_TOKEN_LATENCY_BUCKETS",
    "request_time_per_output_token_seconds": "INTER_TOKEN_LATENCY_BUCKETS",
    "e2e_request_latency_seconds": "REQUEST_LATENCY_BUCKETS",
    "request_queue_time_seconds": "REQUEST_LATENCY_BUCKETS",
    "prompt_tokens": None,
    "generation_tokens": None,
    "request_success": None,
    "num_requests_running": None,
    "num_requests_waiting": None,
    "kv_cache_usage_perc": None,
    "num_preemptions": None,
}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}
_PROMQL_WORDS = {
    "sum", "avg", "max", "min", "count", "by", "without", "rate", "irate", "increase",
    "histogram_quantile", "le", "on", "ignoring", "group_left", "group_right", "offset",
    "and", "or", "unless", "topk", "bottomk", "label_values", "clamp_min", "clamp_max",
}  # fmt: skip


def _families() -> dict[str, tuple[str, list[str], object]]:
    """name -> (type, label names, the collector) for every metric the services register."""
    for service in SERVICES:
        importlib.import_module(f"slinfer.services.{service}.metrics")
    out: dict[str, tuple[str, list[str], object]] = {}
    for collector in list(REGISTRY._collector_to_names):  # noqa: SLF001
        labels = list(getattr(collector, "_labelnames", ()))
        describe = getattr(collector, "describe", None)
        for family in (describe() if describe else None) or collector.collect():
            out[family.name] = (family.type, labels, collector)
    return out


def exported_series() -> set[str]:
    """Every series name a scrape of the services can carry."""
    return {name + sfx for name, (kind, _, _) in _families().items() for sfx in _SUFFIXES[kind]}


def test_vllm_named_metrics_have_the_prefix_label_and_buckets() -> None:
    from slinfer.services.common import metric_buckets

    fams = _families()
    for metric, buckets in VLLM_NAMED.items():
        name = "slinfer:" + metric
        assert name in fams, f"{name} is not exported"
        kind, labels, collector = fams[name]
        assert "model_name" in labels, f"{name} has no model_name label"
        if buckets is not None:
            assert kind == "histogram"
            want = [*getattr(metric_buckets, buckets), float("inf")]
            assert list(collector._upper_bounds) == want  # noqa: SLF001


def test_buckets_equal_the_installed_vllm() -> None:
    vllm_buckets = pytest.importorskip("vllm.v1.metrics.buckets")
    from slinfer.services.common import metric_buckets

    for family in (
        "REQUEST_LATENCY_BUCKETS",
        "TIME_TO_FIRST_TOKEN_BUCKETS",
        "INTER_TOKEN_LATENCY_BUCKETS",
        "ITERATION_TOKENS_BUCKETS",
    ):
        assert tuple(getattr(metric_buckets, family)) == tuple(getattr(vllm_buckets, family))


def test_every_slinfer_metric_is_prefixed_and_documented() -> None:
    doc = (REPO / "docs" / "METRICS.md").read_text()
    names = [n for n in _families() if n.startswith("slinfer")]
    assert names and all(n.startswith("slinfer:") for n in names), names
    missing = [n for n in names if f"`{n}" not in doc]
    assert not missing, f"docs/METRICS.md does not list {missing}"


def _metrics_in(expr: str) -> set[str]:
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    tokens = re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr)
    return {t for t in tokens if t not in _PROMQL_WORDS and not t.startswith("$")}


def test_dashboard_asks_only_for_exported_series() -> None:
    dash = json.loads((REPO / "deploy" / "grafana" / "slinfer-dashboard.json").read_text())
    exported = exported_series()
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert len(panels) >= 15
    asked: set[str] = set()
    for panel in panels:
        exprs = [t["expr"] for t in panel["targets"]]
        assert exprs, f"panel {panel['title']!r} has no query"
        for expr in exprs:
            names = _metrics_in(expr)
            assert names, f"{expr!r} names no metric"
            unknown = names - exported
            assert not unknown, f"panel {panel['title']!r} asks for {unknown}"
            asked |= names
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            assert _metrics_in(var["definition"].replace(", model_name", "")) <= exported
    for metric in VLLM_NAMED:  # every vLLM-named metric has a panel
        assert any(a.startswith("slinfer:" + metric) for a in asked), metric
