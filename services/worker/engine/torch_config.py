"""Configuration of the CPU engine, and its dtype policy (docs/ENGINE.md, "dtype")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .dtype import (
    CPU_DTYPE_ENV,
    FAST_BF16_CPU_FLAGS,
    DTypePolicy,
    cpu_dtype_from_env,
    is_bf16,
    read_cpu_flags,
)

__all__ = [
    "CPU_DTYPE_ENV",
    "FAST_BF16_CPU_FLAGS",
    "DTypePolicy",
    "TorchEngineConfig",
    "cpu_dtype_from_env",
    "dtype_name",
    "read_cpu_flags",
    "resolve_dtype",
]


@dataclass(frozen=True, slots=True)
class TorchEngineConfig:
    model_dir: Path
    kv_capacity_tokens: int  # rounded down to whole blocks
    dtype: DTypePolicy = DTypePolicy.AUTO
    # torch intra-op threads used while this engine runs an iteration or loads;
    # None leaves the process setting alone.
    num_threads: int | None = None
    block_size: int = 16  # tokens per KV block
    # Token budget of one iteration (decode tokens + prefill tokens). A single prompt longer
    # than the budget still runs, alone with the decodes, so that nothing starves.
    max_batched_tokens: int = 2048
    max_batch_size: int = 256  # requests in one iteration
    # The pool is resized from outside as its requests grow (the worker's memory agent): a
    # request that outgrows it waits for the growth instead of finishing with LENGTH.
    kv_elastic: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.dtype, DTypePolicy):
            raise ValueError(f"dtype must be a DTypePolicy, got {self.dtype!r}")
        if self.kv_capacity_tokens < 0:
            raise ValueError(f"kv_capacity_tokens must be >= 0, got {self.kv_capacity_tokens}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1 or None, got {self.num_threads}")
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if self.max_batched_tokens < 1:
            raise ValueError(f"max_batched_tokens must be >= 1, got {self.max_batched_tokens}")
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if not (Path(self.model_dir) / "config.json").is_file():
            raise ValueError(f"{self.model_dir} is not a model directory (no config.json)")


def resolve_dtype(policy: DTypePolicy, cpu_flags: frozenset[str]) -> torch.dtype:
    return torch.bfloat16 if is_bf16(policy, cpu_flags) else torch.float32


def dtype_name(policy: DTypePolicy, cpu_flags: frozenset[str] | None = None) -> str:
    """The dtype `policy` resolves to on this CPU, as perf-table keys spell it ("float32",
    "bfloat16"; services/worker/calibration.py)."""
    flags = read_cpu_flags() if cpu_flags is None else cpu_flags
    return str(resolve_dtype(policy, flags)).replace("torch.", "")
