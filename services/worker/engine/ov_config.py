"""Configuration of the OpenVINO engine (validated at construction)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from slinfer.services.worker.engine.torch_config import DTypePolicy, read_cpu_flags, resolve_dtype
from slinfer.services.worker.engine.weight_format import WeightFormat

# The CPU plugin's paged-attention block (tokens per KV block); GPU plugins use 16.
CPU_BLOCK_SIZE = 32


@dataclass(frozen=True, slots=True)
class OpenVinoEngineConfig:
    model_dir: Path  # HF directory (converted once, cached) or an exported OpenVINO directory
    kv_capacity_tokens: int  # rounded down to whole blocks
    weights: WeightFormat = WeightFormat.INT8  # AUTO is resolved by the registry, not here
    # Activation (and KV cache) precision: the same policy as the PyTorch engine's dtype,
    # mapped to OpenVINO's INFERENCE_PRECISION_HINT (bf16 where the CPU has native bf16).
    dtype: DTypePolicy = DTypePolicy.AUTO
    num_threads: int | None = None  # OpenVINO inference threads; None: all cores
    max_batched_tokens: int = 2048  # token budget of one step (prompt chunks + decodes)
    max_batch_size: int = 256
    # OpenVINO's compiled-model cache (CACHE_DIR): off, it did not shorten a build here
    # (docs/ENGINE.md, "Engines compared").
    cache_blobs: bool = False
    model_root: Path | None = None  # where conversions are cached; default $SLINFER_HOME

    def __post_init__(self) -> None:
        if not isinstance(self.weights, WeightFormat) or self.weights is WeightFormat.AUTO:
            raise ValueError(f"weights must be a concrete WeightFormat, got {self.weights!r}")
        if not isinstance(self.dtype, DTypePolicy):
            raise ValueError(f"dtype must be a DTypePolicy, got {self.dtype!r}")
        if self.kv_capacity_tokens < 0:
            raise ValueError(f"kv_capacity_tokens must be >= 0, got {self.kv_capacity_tokens}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {self.num_threads}")
        if self.max_batched_tokens < 1 or self.max_batch_size < 1:
            raise ValueError("max_batched_tokens and max_batch_size must be >= 1")
        if not (Path(self.model_dir) / "config.json").is_file():
            raise ValueError(f"{self.model_dir} is not a model directory (no config.json)")

    @property
    def precision(self) -> str:
        """OpenVINO's name of the activation precision: 'bf16' or 'f32'."""
        resolved = resolve_dtype(self.dtype, read_cpu_flags())
        return "bf16" if resolved == torch.bfloat16 else "f32"

    def properties(self, blob_dir: Path | None) -> dict[str, object]:
        props: dict[str, object] = {
            "INFERENCE_PRECISION_HINT": self.precision,
            "KV_CACHE_PRECISION": self.precision,
            # The sampler's own thread pool: one thread, it works on a few logits rows.
            "sampler_num_threads": 1,
        }
        if self.num_threads is not None:
            props["INFERENCE_NUM_THREADS"] = self.num_threads
        if blob_dir is not None:
            props["CACHE_DIR"] = str(blob_dir)
        return props
