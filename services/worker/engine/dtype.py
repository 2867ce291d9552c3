"""The CPU engines' dtype setting (docs/ENGINE.md, "dtype"), read without importing torch.

`DTypePolicy.AUTO` picks bf16 where the CPU has native bf16 dot products (AVX512_BF16, AMX)
and fp32 elsewhere; FP32 / BF16 force one. A worker takes it from `--cpu-dtype`, which
defaults to the environment variable `SLINFER_CPU_DTYPE` (fp32, bf16 or auto), so every
worker a stack starts (`slinfer up`, the in-process test stack, the benchmarks' process
stacks) runs in the dtype the environment forces.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from pathlib import Path

CPU_DTYPE_ENV = "SLINFER_CPU_DTYPE"

# CPU features with native bf16 dot products (oneDNN uses them, AMX above all). Without them
# torch's bf16 GEMMs convert to fp32 on the fly: batch-1 decode, memory-bound, still gains from
# the halved weight traffic, but prefill, compute-bound, runs 4-6x slower than in fp32
# (measured in docs/ENGINE.md), and prefill decides the TTFT SLO.
FAST_BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


class DTypePolicy(enum.Enum):
    AUTO = "auto"  # bf16 where the CPU has native bf16 kernels, fp32 otherwise
    FP32 = "fp32"
    BF16 = "bf16"

    @classmethod
    def parse(cls, text: str, source: str = "dtype") -> DTypePolicy:
        try:
            return cls(text.strip().lower())
        except ValueError:
            choices = ", ".join(p.value for p in cls)
            raise ValueError(f"{source} must be one of {choices}, got {text!r}") from None


def cpu_dtype_from_env(environ: Mapping[str, str] | None = None) -> DTypePolicy:
    """`SLINFER_CPU_DTYPE` as a policy; AUTO when unset or empty."""
    value = (os.environ if environ is None else environ).get(CPU_DTYPE_ENV, "")
    return DTypePolicy.parse(value, CPU_DTYPE_ENV) if value.strip() else DTypePolicy.AUTO


def read_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def is_bf16(policy: DTypePolicy, cpu_flags: frozenset[str]) -> bool:
    """Does `policy` resolve to bf16 on a CPU with `cpu_flags`?"""
    if policy is DTypePolicy.AUTO:
        return bool(cpu_flags & FAST_BF16_CPU_FLAGS)
    return policy is DTypePolicy.BF16


def dtype_bytes(policy: DTypePolicy, cpu_flags: frozenset[str] | None = None) -> int:
    """Bytes per weight and per KV element of a CPU engine under `policy` on this CPU."""
    return 2 if is_bf16(policy, read_cpu_flags() if cpu_flags is None else cpu_flags) else 4
