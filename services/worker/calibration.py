"""At load, give an instance its performance model: cached tables, or measure them now.

The first load of a model on a kind of hardware (same model files, engine, dtype, threads,
CPU) measures the tables (profiler.py) before the instance turns ready; later loads read
them from the disk cache in milliseconds. The tables are published in etcd for the
scheduler's admission (`/slinfer/profiles/{model}/{label}`).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from slinfer.policy import DeviceKind, ModelSpec, PerfModel
from slinfer.policy.perf_model import DEFAULT_SAFETY
from slinfer.services.common.engine_types import EngineKind, WeightFormat
from slinfer.services.common.model_dir import inspect_model_dir
from slinfer.services.worker.engine.base import Engine
from slinfer.services.worker.profiler import (
    ProfileCache,
    ProfileGrid,
    cpu_name,
    measure,
    profile_key,
    spot_check,
)

# A cached table whose first prefill point (or the batch-1 decode after it) now runs in under
# half its tabled time was measured on a busy machine: measure again. A table an operator
# pinned ("pinned": true in its file) is used as written: it models the device on purpose.
STALE_RATIO = 0.5


@dataclass(frozen=True, slots=True)
class Calibration:
    tables: dict[str, Any]
    perf: PerfModel
    spec: ModelSpec
    profile_s: float
    cached: bool


def hardware_label(kind: str, threads: int) -> str:
    """Nodes with the same label share measured tables: same CPU model, thread count and
    default engine (what `engine=auto` runs there; a model's tables in etcd are per label,
    so an OpenVINO node's never stand for a PyTorch node's)."""
    from slinfer.services.worker.engine.registry import default_engine

    engine = default_engine(kind).value
    digest = hashlib.sha256(f"{cpu_name()}|{threads}|{engine}".encode()).hexdigest()[:8]
    return f"{kind}-{threads}t-{digest}"


def table_key(
    model_dir: Path,
    engine: EngineKind,
    dtype: str,
    weights: WeightFormat | None,
    threads: int,
    kind: str,
) -> str:
    """The cache key of an instance's tables: they belong to the engine *and* the weight
    format it runs (an int8 instance is never timed by its fp32 sibling's tables)."""
    if weights is not None:
        dtype = f"{dtype}+w{weights.value}"
    return profile_key(model_dir, engine.value, dtype, threads, kind)


def auto_table_key(
    model_dir: Path,
    threads: int,
    kind: str = "cpu",
    engine: EngineKind | None = None,
    weights: WeightFormat = WeightFormat.AUTO,
) -> str:
    """The key a worker of this node kind uses for a deploy with these choices (tests seed
    tables under it)."""
    from slinfer.services.worker.engine.registry import EngineSpec, engine_for, resolve_weights
    from slinfer.services.worker.engine.torch_config import (
        cpu_dtype_from_env,
        read_cpu_flags,
        resolve_dtype,
    )

    chosen = engine_for(kind, engine, model_dir)
    device = "cuda" if kind == "gpu" else "cpu"
    fmt = resolve_weights(chosen, EngineSpec(model_dir, 0, device, weights=weights))
    dtype = str(resolve_dtype(cpu_dtype_from_env(), read_cpu_flags())).replace("torch.", "")
    return table_key(model_dir, chosen, dtype, fmt, threads, kind)


def calibrate(
    engine: Engine,
    model_id: str,
    model_dir: Path,
    kind: str,
    threads: int,
    grid: ProfileGrid,
    cache: ProfileCache,
) -> Calibration:
    """Runs on the device thread (it steps the engine when measuring)."""
    stats = engine.stats()
    dtype = str(getattr(engine, "dtype", "default")).replace("torch.", "")
    key = table_key(model_dir, engine.kind, dtype, getattr(engine, "weights", None), threads, kind)
    t0 = time.perf_counter()
    vocab = int(getattr(engine, "vocab_size", 0)) or inspect_model_dir(str(model_dir)).vocab_size
    tables = cache.get(key)
    cached = tables is not None
    pinned = bool(tables and tables.get("pinned"))
    if tables is not None and not pinned and spot_check(engine, tables, vocab) < STALE_RATIO:
        logger.warning("cached perf tables for {} over-state its cost; measuring again", model_id)
        tables, cached = None, False
    if tables is None:
        tables = measure(engine, grid, vocab)
        cache.put(key, tables)
    profile_s = time.perf_counter() - t0
    device_kind = DeviceKind.GPU if kind == "gpu" else DeviceKind.CPU
    perf = PerfModel.from_tables(
        tables["prefill_ms"], tables["decode_ms"], DEFAULT_SAFETY[device_kind]
    )
    block = int(
        getattr(getattr(engine, "kv_spec", None), "block_size", None)
        or getattr(engine, "block_size", None)
        or 16
    )
    spec = ModelSpec(
        name=model_id,
        weights_bytes=max(stats.weights_bytes, 1),
        kv_bytes_per_token=max(stats.kv_bytes_per_token, 1),
        gpu_block_tokens=block,
        cpu_block_tokens=block,
        cpu_kv_pool_bytes=stats.kv_capacity_tokens * stats.kv_bytes_per_token,
    )
    logger.info(
        "perf model for {}: {} in {:.2f}s (key {}, pid {})",
        model_id,
        ("pinned" if pinned else "cached") if cached else "measured",
        profile_s,
        key,
        os.getpid(),
    )
    return Calibration(tables, perf, spec, profile_s, cached)
