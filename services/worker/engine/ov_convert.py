"""Models for the OpenVINO engine: converted once per model and weight format, then cached.

`prepare_ov_model(model_dir, fmt)` returns a directory the ContinuousBatchingPipeline can load:

- a directory that already holds `openvino_model.xml` (e.g. `optimum-cli export openvino
  --task text-generation-with-past`) is taken as is (its weight format is read off its
  constants);
- a Hugging Face directory (safetensors) is converted by `ov_graph.build_model` into
  `$SLINFER_HOME/openvino/{name}-{format}-{key}/`, where the key hashes the model's files
  (config, weight file names, sizes and mtimes), the weight format, the OpenVINO version and
  the converter's version. A later deploy of the same model and format finds it there and
  converts nothing. Conversion writes into a temporary directory renamed into place, so a
  crash never leaves a half-written model, and two workers racing produce one result.

Compiled blobs: the engine passes `CACHE_DIR` (`$SLINFER_HOME/openvino/blobs`) to the
pipeline, so OpenVINO keeps what its compiler produced for this CPU next to the models.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slinfer.services.worker.engine.weight_format import WeightFormat

# Bump when the converter's output changes (graph or quantization): old conversions are
# then never read again.
CONVERTER_VERSION = 2  # 2: RoPE from float64 cos/sin tables
OV_MODEL_FILE = "openvino_model.xml"
_COPIED = ("config.json", "generation_config.json")

ProgressFn = Callable[[str, float], None]  # (stage, fraction done)


@dataclass(frozen=True, slots=True)
class OvModel:
    path: Path  # directory with openvino_model.xml/.bin and config.json
    weights: WeightFormat  # what its projection weights are stored as
    converted: bool  # True if this call converted it (False: cache hit or exported dir)
    convert_s: float


def slinfer_home() -> Path:
    return Path(os.environ.get("SLINFER_HOME", Path.home() / ".cache" / "slinfer"))


def ov_root() -> Path:
    """Converted models and compiled blobs: $SLINFER_OV_CACHE, else $SLINFER_HOME/openvino."""
    override = os.environ.get("SLINFER_OV_CACHE")
    return Path(override) if override else slinfer_home() / "openvino"


def blob_dir() -> Path:
    return ov_root() / "blobs"


def is_exported(model_dir: Path) -> bool:
    return (model_dir / OV_MODEL_FILE).is_file()


def conversion_key(model_dir: Path, fmt: WeightFormat) -> str:
    import openvino as ov

    h = hashlib.sha256()
    h.update((model_dir / "config.json").read_bytes())
    for f in sorted(model_dir.glob("*.safetensors")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(f"{fmt.value}|{ov.get_version()}|converter{CONVERTER_VERSION}".encode())
    return h.hexdigest()[:16]


def detect_format(model_dir: Path) -> WeightFormat:
    """The weight format of an exported model, read off its IR's constant types."""
    types: set[str] = set()
    for _, elem in ET.iterparse(model_dir / OV_MODEL_FILE):
        if elem.tag == "data" and "element_type" in elem.attrib:
            types.add(elem.attrib["element_type"])
        elem.clear()
    if types & {"u4", "i4"}:
        return WeightFormat.INT4
    if types & {"u8", "i8"}:
        return WeightFormat.INT8
    if types & {"bf16", "f16"}:
        return WeightFormat.BF16
    return WeightFormat.FP32


def prepare_ov_model(
    model_dir: Path,
    fmt: WeightFormat,
    progress: ProgressFn | None = None,
    root: Path | None = None,
) -> OvModel:
    """An OpenVINO directory for `model_dir` in weight format `fmt` (not AUTO)."""
    model_dir = Path(model_dir)
    if is_exported(model_dir):
        found = detect_format(model_dir)
        if fmt not in (WeightFormat.AUTO, found):
            raise ValueError(
                f"{model_dir} is an exported OpenVINO model with {found.value} weights; "
                f"deploy it with weights={found.value} (or auto), or deploy the HF directory"
            )
        return OvModel(model_dir, found, converted=False, convert_s=0.0)
    if fmt is WeightFormat.AUTO:
        raise ValueError("resolve the weight format before converting")
    root = root or ov_root()
    target = root / f"{model_dir.name}-{fmt.value}-{conversion_key(model_dir, fmt)}"
    if (target / OV_MODEL_FILE).is_file():
        return OvModel(target, fmt, converted=False, convert_s=0.0)
    t0 = time.perf_counter()
    convert(model_dir, target, fmt, progress)
    return OvModel(target, fmt, converted=True, convert_s=time.perf_counter() - t0)


def convert(model_dir: Path, target: Path, fmt: WeightFormat, progress: ProgressFn | None) -> None:
    import openvino as ov

    from slinfer.services.worker.engine.ov_graph import build_model

    def layers(done: int, total: int) -> None:
        if progress is not None:
            progress(f"converting {model_dir.name} to {fmt.value}", 0.8 * done / total)

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model = build_model(model_dir, fmt, layers)
        if progress is not None:
            progress(f"writing {target.name}", 0.85)
        ov.save_model(model, tmp / OV_MODEL_FILE, compress_to_fp16=False)
        for name in _COPIED:
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, tmp / name)
        (tmp / "slinfer_conversion.json").write_text(
            json.dumps(
                {"source": str(model_dir), "weights": fmt.value, "openvino": ov.get_version()}
            )
        )
        try:
            tmp.rename(target)
        except OSError:
            if not (target / OV_MODEL_FILE).is_file():  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if progress is not None:
        progress(f"converted {model_dir.name} ({fmt.value})", 1.0)
