"""Weight formats: how an instance stores its projection weights (chosen per deploy).

A separate concept from the activation dtype (the precision the engine computes and keeps
its KV cache in, `torch_config.DTypePolicy`): an instance can keep int8 weights and compute in
bf16 or fp32. Both CPU engines take every format:

| format | PyTorch engine | OpenVINO engine |
| --- | --- | --- |
| `fp32` | `nn.Linear` weights in fp32 | f32 constants |
| `bf16` | `nn.Linear` weights in bf16 | bf16 constants, decompressed in the kernel |
| `int8` | per-channel symmetric int8, `aten._weight_int8pack_mm` | per-channel asymmetric u8 |
| `int4` | groups of 64, asym., `aten._weight_int4pack_mm_for_cpu` | groups of 64, asym. u4 |

Embeddings, norms and the KV cache keep the activation dtype; the LM head is int8 in both
quantized formats (int4 costs a small model most of its quality there). `AUTO` resolves to
the fastest format that passes the quality gate on this CPU (`weight_choice.py`).
"""

from __future__ import annotations

from slinfer.services.common.engine_types import WeightFormat

__all__ = ["INT4_GROUP_SIZE", "PPL_TOLERANCE", "WeightFormat"]

# Group size of the int4 formats (both engines): 64 input channels share a scale and zero.
INT4_GROUP_SIZE = 64

# Perplexity over the quality-gate text may rise by at most this fraction over fp32's
# (ISSUE 15: int8 within 2 %, int4 within 8 %); unquantized formats pass by construction
# but are measured all the same.
PPL_TOLERANCE: dict[WeightFormat, float] = {
    WeightFormat.FP32: 0.02,
    WeightFormat.BF16: 0.02,
    WeightFormat.INT8: 0.02,
    WeightFormat.INT4: 0.08,
}
