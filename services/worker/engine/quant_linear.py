"""Weight formats of the PyTorch engine: projections stored as int8, int4, bf16 or fp32.

`apply_weight_format(model, fmt, dtype)` replaces the decoder's `nn.Linear` projections (and
the LM head) after loading, through PyTorch's own CPU kernels:

- int8: symmetric per output channel, `aten._weight_int8pack_mm(x, W_int8, scales)`;
- int4: asymmetric groups of 64 input channels, packed by
  `aten._convert_weight_to_int4pack_for_cpu` and multiplied by
  `aten._weight_int4pack_mm_for_cpu(x, W_packed, 64, scales_and_zeros)` (w = (q - 8)·s + z);
- fp32 / bf16: the weight kept in that dtype; when it differs from the activation dtype the
  input is cast to it for the product and the result cast back.

The LM head is int8 in both quantized formats (int4 there costs small models most of their
quality); embeddings and norms stay in the activation dtype. The quantization is the same
min/max arithmetic as the OpenVINO converter's, symmetric here for int8 because that is what
the int8 kernel takes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slinfer.services.worker.engine.weight_format import INT4_GROUP_SIZE, WeightFormat


class Int8Linear(nn.Module):
    def __init__(self, linear: nn.Linear, act_dtype: torch.dtype):
        super().__init__()
        w = linear.weight.detach().float()
        scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-8)
        q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
        self.register_buffer("qweight", q.contiguous())
        self.register_buffer("scales", scales.to(act_dtype))
        bias = linear.bias.detach().to(act_dtype) if linear.bias is not None else None
        self.register_buffer("bias", bias)
        self.out_features, self.in_features = w.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if flat.dtype != self.scales.dtype:
            flat = flat.to(self.scales.dtype)
        y = torch.ops.aten._weight_int8pack_mm(flat.contiguous(), self.qweight, self.scales)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features).to(x.dtype)


class Int4Linear(nn.Module):
    def __init__(self, linear: nn.Linear, act_dtype: torch.dtype, group: int = INT4_GROUP_SIZE):
        super().__init__()
        w = linear.weight.detach().float()
        n, k = w.shape
        g = w.reshape(n, k // group, group)
        lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
        scale = ((hi - lo) / 15).clamp(min=1e-8)
        zero = lo + scale * 8
        q = torch.clamp(torch.round((g - lo) / scale), 0, 15).to(torch.int32).reshape(n, k)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.contiguous(), 2)
        sz = torch.cat([scale, zero], dim=2).transpose(0, 1).contiguous()  # [k/g, n, 2]
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_zeros", sz.to(act_dtype))
        bias = linear.bias.detach().to(act_dtype) if linear.bias is not None else None
        self.register_buffer("bias", bias)
        self.group = group
        self.out_features, self.in_features = n, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if flat.dtype != self.scales_and_zeros.dtype:
            flat = flat.to(self.scales_and_zeros.dtype)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(
            flat.contiguous(), self.packed, self.group, self.scales_and_zeros
        )
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features).to(x.dtype)


class CastLinear(nn.Module):
    """A projection whose weight is stored in another dtype than the activations."""

    def __init__(self, linear: nn.Linear, weight_dtype: torch.dtype):
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().to(weight_dtype), requires_grad=False)
        bias = linear.bias
        self.bias = (
            nn.Parameter(bias.detach().to(weight_dtype), requires_grad=False)
            if bias is not None
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias).to(x.dtype)


_STORAGE = {WeightFormat.FP32: torch.float32, WeightFormat.BF16: torch.bfloat16}


def _replacement(linear: nn.Linear, fmt: WeightFormat, act_dtype: torch.dtype) -> nn.Module:
    if fmt is WeightFormat.INT4 and linear.in_features % INT4_GROUP_SIZE == 0:
        return Int4Linear(linear, act_dtype)
    if fmt.quantized:
        return Int8Linear(linear, act_dtype)
    if _STORAGE[fmt] != act_dtype:
        return CastLinear(linear, _STORAGE[fmt])
    return linear


def apply_weight_format(model: nn.Module, fmt: WeightFormat, act_dtype: torch.dtype) -> int:
    """Replace the projections in place; returns how many were replaced."""
    if fmt is WeightFormat.AUTO:
        raise ValueError("resolve the weight format before loading")
    replaced = 0
    with torch.no_grad():
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is not nn.Linear:
                    continue
                head = name == "lm_head"
                target = WeightFormat.INT8 if head and fmt.quantized else fmt
                new = _replacement(child, target, act_dtype)
                if new is not child:
                    setattr(parent, name, new)
                    replaced += 1
    return replaced
