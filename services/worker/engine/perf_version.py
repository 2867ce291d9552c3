"""Cost versions of the engines: part of the key of cached performance tables.

A worker measures its engine's prefill/decode tables once per model, engine, dtype, threads
and CPU, and reads them from disk afterwards (services/worker/profiler.py). Tables measured
before an engine got faster (or slower) would mis-state its cost forever, and the busy-machine
re-check (calibration.STALE_RATIO) only catches tables that over-state it by 2x or more. So
each engine has a cost version, folded into the cache key: bump it with any change that moves
its iteration times (docs/ENGINE.md, "Iteration cost").
"""

from __future__ import annotations

# torch 2: one block gather per layer, mask-free attention for a lone request, transposed
# projections in batched decodes (docs/ENGINE.md, "Iteration cost").
# openvino 1: the GenAI ContinuousBatchingPipeline over the converter of ov_graph.py.
PERF_VERSIONS: dict[str, int] = {"torch": 2, "vllm": 1, "openvino": 1}


def perf_version(engine: str) -> int:
    """The cost version of an engine (EngineKind value); 0 for one without a version."""
    return PERF_VERSIONS.get(engine, 0)
