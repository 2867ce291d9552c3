"""`weights=auto`: the fastest weight format that passes the quality gate, per engine and CPU.

The quality gate (`quality.py`, run by `python -m bench.quality` or `slinfer models gate`)
records, per model and engine, each format's perplexity ratio to fp32 and whether it passed
(int8 within 2 %, int4 within 8 %). `choose` walks the engine's formats from fastest to
slowest (the order measured by `bench/engine.py` on this project's CPUs, docs/ENGINE.md) and
takes the first that passed; a format without a record is taken only if it is int8 (it
passed on every model measured here, with a wide margin) or unquantized, so an unmeasured
model never gets int4 silently. Records live in `$SLINFER_HOME/quality/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from slinfer.services.worker.engine.base import EngineKind
from slinfer.services.worker.engine.weight_format import WeightFormat

# Fastest first (bench/engine.py: decode step time at batch 1 and 8, same run).
SPEED_ORDER: dict[EngineKind, tuple[WeightFormat, ...]] = {
    EngineKind.OPENVINO: (
        WeightFormat.INT4,
        WeightFormat.INT8,
        WeightFormat.BF16,
        WeightFormat.FP32,
    ),
    EngineKind.TORCH: (WeightFormat.INT8, WeightFormat.INT4, WeightFormat.BF16, WeightFormat.FP32),
}
# What auto may take for a model the gate has not measured.
UNMEASURED_OK = frozenset({WeightFormat.INT8, WeightFormat.BF16, WeightFormat.FP32})


def quality_dir() -> Path:
    home = Path(os.environ.get("SLINFER_HOME", Path.home() / ".cache" / "slinfer"))
    return home / "quality"


def model_key(model_dir: Path) -> str:
    h = hashlib.sha256((model_dir / "config.json").read_bytes())
    for f in sorted(model_dir.glob("*.safetensors")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return f"{model_dir.name}-{h.hexdigest()[:12]}"


def load_record(model_dir: Path, root: Path | None = None) -> dict[str, Any]:
    path = (root or quality_dir()) / f"{model_key(model_dir)}.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def save_result(
    model_dir: Path,
    engine: EngineKind,
    fmt: WeightFormat,
    result: dict[str, Any],
    root: Path | None = None,
) -> None:
    root = root or quality_dir()
    root.mkdir(parents=True, exist_ok=True)
    record = load_record(model_dir, root)
    record.setdefault(engine.value, {})[fmt.value] = {**result, "measured_at": time.time()}
    tmp = root / f".{model_key(model_dir)}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(root / f"{model_key(model_dir)}.json")


def choose(engine: EngineKind, model_dir: Path, root: Path | None = None) -> WeightFormat:
    """The format `weights=auto` resolves to for this engine and model."""
    order = SPEED_ORDER.get(engine)
    if order is None:  # vLLM: the checkpoint's own weights
        return WeightFormat.AUTO
    measured = load_record(model_dir, root).get(engine.value, {})
    for fmt in order:
        result = measured.get(fmt.value)
        if result is not None:
            if result.get("passed"):
                return fmt
        elif fmt in UNMEASURED_OK:
            return fmt
    return WeightFormat.FP32
