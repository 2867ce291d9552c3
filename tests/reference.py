"""Reference models for exactness tests: transformers' model with the weights an engine runs.

An engine that stores int8 or int4 weights computes the model whose projections are those
weights dequantized; greedy outputs are compared with transformers' `generate` on exactly
that model (same activation dtype), so the comparison holds for every weight format and both
CPU engines.
"""

from __future__ import annotations

from pathlib import Path

import torch

from slinfer.services.worker.engine.base import EngineKind
from slinfer.services.worker.engine.weight_format import INT4_GROUP_SIZE, WeightFormat


def _ov_dequantized(w: torch.Tensor, fmt: WeightFormat) -> torch.Tensor:
    from slinfer.services.worker.engine.ov_weights import quantize_asym

    n, k = w.shape
    if fmt is WeightFormat.INT4 and k % INT4_GROUP_SIZE == 0:
        q, scale, zero = quantize_asym(w, 4, INT4_GROUP_SIZE)
    elif fmt.quantized:
        q, scale, zero = quantize_asym(w, 8, None)
    elif fmt is WeightFormat.BF16:
        return w.to(torch.bfloat16).float()
    else:
        return w.float()
    # The graph decompresses in f16: (q - zero) and the scale are f16, so is their product.
    return ((q.float() - zero.float()).half() * scale.half()).float().reshape(n, k)


def reference_model(path: Path, engine, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """transformers' model of `path` with `engine`'s effective weights, in `dtype` (default:
    the engine's activation dtype)."""
    from transformers import AutoModelForCausalLM

    dtype = dtype or getattr(engine, "dtype", torch.float32)
    weights: WeightFormat | None = getattr(engine, "weights", None)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    if weights is not None and engine.kind is EngineKind.OPENVINO:
        with torch.no_grad():
            head_fmt = WeightFormat.INT8 if weights.quantized else weights
            embed = model.get_input_embeddings().weight
            lm_head = model.get_output_embeddings()
            tied = lm_head.weight is embed
            if tied:  # OpenVINO keeps separate embedding and head constants
                lm_head.weight = torch.nn.Parameter(embed.detach().clone())
            embed.copy_(_ov_dequantized(embed, head_fmt))
            lm_head.weight.copy_(_ov_dequantized(lm_head.weight, head_fmt))
            for name, module in model.named_modules():
                if type(module) is torch.nn.Linear and not name.endswith("lm_head"):
                    module.weight.copy_(_ov_dequantized(module.weight, weights))
        return model.to(dtype)
    model = model.to(dtype)
    if weights is not None and engine.kind is EngineKind.TORCH and engine.config.weights:
        from slinfer.services.worker.engine.quant_linear import apply_weight_format

        apply_weight_format(model, weights, dtype)
    return model
