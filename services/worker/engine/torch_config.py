"""Configuration of the CPU engine, and its dtype policy (docs/ENGINE.md, "dtype")."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

import torch

from slinfer.services.worker.engine.weight_format import WeightFormat

# CPU features with native bf16 dot products (oneDNN uses them, AMX above all). Without them
# torch's bf16 GEMMs convert to fp32 on the fly: batch-1 decode, memory-bound, still gains from
# the halved weight traffic, but prefill, compute-bound, runs 4-6x slower than in fp32
# (measured in docs/ENGINE.md), and prefill decides the TTFT SLO.
FAST_BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


class DTypePolicy(enum.Enum):
    AUTO = "auto"  # bf16 where the CPU has native bf16 kernels, fp32 otherwise
    FP32 = "fp32"
    BF16 = "bf16"


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
    # How the projections are stored (weight_format.py); None: in the activation dtype, as
    # transformers loads them. AUTO must be resolved before (registry.resolve_weights).
    weights: WeightFormat | None = None
    device: str = "cpu"  # "cpu" or "cuda"

    def __post_init__(self) -> None:
        if not isinstance(self.dtype, DTypePolicy):
            raise ValueError(f"dtype must be a DTypePolicy, got {self.dtype!r}")
        if self.weights is WeightFormat.AUTO or not (
            self.weights is None or isinstance(self.weights, WeightFormat)
        ):
            raise ValueError(f"weights must be a WeightFormat (not AUTO) or None: {self.weights!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and self.weights is not None and self.weights.quantized:
            raise ValueError(
                "int8/int4 weights use PyTorch's CPU kernels; on cuda deploy fp32 or bf16"
            )
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


def read_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def resolve_dtype(policy: DTypePolicy, cpu_flags: frozenset[str]) -> torch.dtype:
    if policy is DTypePolicy.FP32:
        return torch.float32
    if policy is DTypePolicy.BF16:
        return torch.bfloat16
    return torch.bfloat16 if cpu_flags & FAST_BF16_CPU_FLAGS else torch.float32
