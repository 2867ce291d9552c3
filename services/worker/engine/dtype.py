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

CPU_DTYPE_ENV = "SLINFER_CPU_DTYPE"


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
