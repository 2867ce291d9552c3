"""Weight formats of the PyTorch engine (int8 / int4 weight-only, bf16 / fp32 storage)."""

from __future__ import annotations

import pytest
import torch

from slinfer.services.worker.engine.quant_linear import CastLinear, Int4Linear, Int8Linear
from slinfer.services.worker.engine.weight_format import WeightFormat
from tests.engine.reference import Reference
from tests.reference import reference_model

from .helpers import greedy, request, run_to_end


@pytest.mark.parametrize("cls", [Int8Linear, Int4Linear])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantized_projection_is_close_to_the_full_one(cls, dtype) -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(128, 96, bias=True)
    q = cls(linear, dtype)
    x = torch.randn(5, 3, 128)
    full = linear(x)
    got = q(x.to(dtype)).float()
    assert got.shape == full.shape
    # per-channel int8: error ~ |x| |w| / 254 per term; int4 groups: ~ 16x that
    rel = (got - full).norm() / full.norm()
    assert rel < (0.02 if cls is Int8Linear else 0.15) + (0.02 if dtype is torch.bfloat16 else 0)


def test_cast_linear_stores_bf16_and_computes_in_the_activation_dtype() -> None:
    linear = torch.nn.Linear(32, 16)
    cast = CastLinear(linear, torch.bfloat16)
    x = torch.randn(4, 32)
    y = cast(x)
    assert cast.weight.dtype is torch.bfloat16 and y.dtype is torch.float32
    assert torch.allclose(y, linear(x), atol=0.05)


@pytest.mark.parametrize("fmt", [WeightFormat.INT8, WeightFormat.INT4, WeightFormat.BF16])
def test_engine_greedy_is_the_greedy_choice_on_the_same_weights(
    make_engine, tiny_models, fmt
) -> None:
    engine = make_engine("llama", weights=fmt)
    assert engine.weights is fmt
    prompt = engine.encode("The capital of France is")
    got = run_to_end(engine, request("a", prompt, greedy(10)))["a"].tokens
    # Each token is transformers' greedy choice on the same (dequantized) weights, within the
    # reference's own rounding error in the engine's dtype (tests/engine/reference.py).
    reference = Reference(
        tiny_models,
        build=lambda arch, dtype: reference_model(tiny_models[arch], engine, dtype),
        exact_dtype=torch.float32 if fmt.quantized else torch.float64,  # int kernels: no f64
    )
    reference.assert_greedy("llama", prompt, got, 10, engine.dtype)


def test_quantized_weights_take_less_memory(make_engine) -> None:
    full = make_engine("llama").stats().weights_bytes
    int8 = make_engine("llama", weights=WeightFormat.INT8).stats().weights_bytes
    int4 = make_engine("llama", weights=WeightFormat.INT4).stats().weights_bytes
    assert int4 < int8 < full
