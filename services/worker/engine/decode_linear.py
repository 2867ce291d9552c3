"""Projections of a batched decode: `W @ X^T` instead of `X @ W^T` for a few rows.

In a decode iteration every linear layer multiplies a handful of rows (one per request) by a
large weight: memory-bound work whose floor is reading the weight once. On the measured CPU
(docs/ENGINE.md, "Iteration cost") MKL's `x @ W^T` for 2-16 rows costs 1.5-2x its one-row
time, while the same product computed as `(W @ x^T)^T` stays close to it (~30 % less time for
the 2-4 rows of a small batch). Both are the same dot products; rounding may differ in the last
bit, as it already does between a request decoded alone and in a batch.

`DecodeLinears.install(model)` wraps the forward of every fp32 `nn.Linear` of a model; the wrapped
forward takes the transposed route only while `active` is set (the engine sets it for pure
decode iterations), for inputs of 2..MAX_ROWS rows. Prefills, and decodes of one request, run
`F.linear` unchanged, exactly as transformers' own `generate` does.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

MAX_ROWS = 16  # measured gain fades to ~7 % at 8-16 rows; above, plain F.linear


class DecodeLinears:
    def __init__(self) -> None:
        self.active = False
        self.count = 0  # linear layers wrapped

    def install(self, model: torch.nn.Module) -> DecodeLinears:
        for module in model.modules():
            # fp32 only: measured there (MKL); bf16 GEMMs go to other kernels (oneDNN/AMX).
            if type(module) is torch.nn.Linear and module.weight.dtype is torch.float32:
                module.forward = types.MethodType(self._forward_fn(), module)
                self.count += 1
        return self

    def _forward_fn(self):
        mode = self

        def forward(linear: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
            rows = x.numel() // x.shape[-1] if x.dim() else 0
            if not mode.active or not 2 <= rows <= MAX_ROWS:
                return F.linear(x, linear.weight, linear.bias)
            y = torch.mm(linear.weight, x.reshape(rows, x.shape[-1]).t()).t()
            if linear.bias is not None:
                y = y + linear.bias
            return y.contiguous().view(*x.shape[:-1], y.shape[-1])

        return forward
