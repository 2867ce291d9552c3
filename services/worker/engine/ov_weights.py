"""Weight constants of an OpenVINO graph, in the instance's weight format.

A projection weight `[N, K]` (out, in) becomes a constant sub-graph that yields f32 and feeds a
`MatMul(x, W, transpose_b=True)`. Quantized weights follow the decompression pattern that
OpenVINO's CPU plugin fuses into its FullyConnected kernels (weights stay compressed in memory
and are expanded on the fly): `Convert(Multiply(Subtract(Convert(q), Convert(zero)), scale))`,
with int4 groups reshaped back to `[N, K]`. The quantization is plain asymmetric min/max per
output channel (int8) or per group of input channels (int4), computed once at conversion.
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import torch

from slinfer.services.worker.engine.weight_format import INT4_GROUP_SIZE, WeightFormat


def _bf16(weight: torch.Tensor) -> ov.Node:
    bits = weight.to(torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint16)
    tensor = ov.Tensor(ov.Type.bf16, ov.Shape(list(bits.shape)))
    tensor.data.view(np.uint16)[...] = bits
    return ops.convert(ov.op.Constant(tensor), ov.Type.f32)


def quantize_asym(w: torch.Tensor, bits: int, group: int | None) -> tuple[torch.Tensor, ...]:
    """(q, scale, zero): w ≈ (q - zero) * scale per row, or per `group` input channels."""
    n, k = w.shape
    levels = (1 << bits) - 1
    g = w.float().reshape(n, k // group, group) if group else w.float().reshape(n, 1, k)
    lo = g.amin(dim=-1, keepdim=True).clamp(max=0)
    hi = g.amax(dim=-1, keepdim=True).clamp(min=0)
    scale = ((hi - lo) / levels).clamp(min=1e-8)
    zero = torch.round(-lo / scale).clamp(0, levels)
    q = torch.clamp(torch.round(g / scale) + zero, 0, levels)
    return q.to(torch.uint8), scale, zero.to(torch.uint8)


def _pack_u4(q: np.ndarray) -> np.ndarray:
    flat = q.reshape(-1)
    if flat.size % 2:
        flat = np.concatenate([flat, np.zeros(1, dtype=np.uint8)])
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)


def _u4_constant(q: np.ndarray) -> ov.Node:
    tensor = ov.Tensor(ov.Type.u4, ov.Shape(list(q.shape)))
    tensor.data[:] = _pack_u4(q)
    return ov.op.Constant(tensor)


def _decompressed(q: ov.Node, zero: ov.Node, scale: np.ndarray) -> ov.Node:
    f16 = ov.Type.f16
    centred = ops.subtract(ops.convert(q, f16), ops.convert(zero, f16))
    return ops.multiply(centred, ops.constant(scale.astype(np.float16)))


def int8_matrix(w: torch.Tensor) -> ov.Node:
    q, scale, zero = quantize_asym(w, 8, None)
    n, k = w.shape
    node = _decompressed(
        ops.constant(q.reshape(n, k).numpy()),
        ops.constant(zero.reshape(n, 1).numpy()),
        scale.reshape(n, 1).numpy(),
    )
    return ops.convert(node, ov.Type.f32)


def int4_matrix(w: torch.Tensor) -> ov.Node:
    n, k = w.shape
    q, scale, zero = quantize_asym(w, 4, INT4_GROUP_SIZE)
    node = _decompressed(_u4_constant(q.numpy()), _u4_constant(zero.numpy()), scale.numpy())
    node = ops.reshape(node, ops.constant(np.array([n, k], dtype=np.int64)), False)
    return ops.convert(node, ov.Type.f32)


def matrix(w: torch.Tensor, fmt: WeightFormat) -> ov.Node:
    """A projection weight [out, in] as an f32-producing constant sub-graph."""
    if fmt is WeightFormat.INT4 and w.shape[1] % INT4_GROUP_SIZE == 0:
        return int4_matrix(w)
    if fmt in (WeightFormat.INT8, WeightFormat.INT4):  # int4 falls back per matrix
        return int8_matrix(w)
    if fmt is WeightFormat.BF16:
        return _bf16(w)
    return ops.constant(w.float().contiguous().numpy())


def head_format(fmt: WeightFormat) -> WeightFormat:
    """The LM head and embeddings: int8 in both quantized formats."""
    return WeightFormat.INT8 if fmt.quantized else fmt


def vector(w: torch.Tensor) -> ov.Node:
    """Norm weights and biases: always f32 (tiny, and precision-sensitive)."""
    return ops.constant(w.float().contiguous().numpy())


def weight_bytes(model: ov.Model) -> int:
    """Bytes of the model's constants (what a decode step streams, roughly)."""
    total = 0
    for op in model.get_ops():
        if op.get_type_name() == "Constant":
            total += op.get_byte_size()
    return total
