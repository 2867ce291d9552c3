"""The transposed small-batch projection of decode iterations (decode_linear.py)."""

from __future__ import annotations

import pytest
import torch

from slinfer.services.worker.engine.decode_linear import MAX_ROWS, DecodeLinears

from .helpers import collect, greedy, request


def model(bias: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(48, 80, bias=bias), torch.nn.Linear(80, 8))


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 2, 4, MAX_ROWS, MAX_ROWS + 1])
def test_wrapped_linear_computes_the_same_product(bias, rows) -> None:
    reference, wrapped = model(bias), model(bias)
    linears = DecodeLinears().install(wrapped)
    assert linears.count == 2
    x = torch.randn(1, rows, 48)  # the packed row of a decode: [1, B, hidden]
    linears.active = False
    assert torch.equal(wrapped(x), reference(x))  # inactive: F.linear itself
    linears.active = True
    out = wrapped(x)
    assert out.shape == (1, rows, 8) and out.is_contiguous()
    torch.testing.assert_close(out, reference(x), rtol=1e-5, atol=1e-6)
    if rows == 1 or rows > MAX_ROWS:
        assert torch.equal(out, reference(x))  # outside 2..MAX_ROWS: F.linear


def test_engine_uses_it_for_pure_decodes_only(make_engine, hf_greedy) -> None:
    engine = make_engine("qwen2")  # q/k/v projections with bias
    assert engine._linears.count > 0  # white-box
    prompts = [engine.encode(p) for p in ("The capital of France is", "Hello", "One two")]
    for i, prompt in enumerate(prompts):
        engine.add_request(request(f"r{i}", prompt, greedy(10)))
    results: dict = {}
    collect(results, engine.step())  # the three prefills
    assert not engine._linears.active
    collect(results, engine.step())  # a decode of three requests
    assert engine._linears.active
    while engine.has_work():
        collect(results, engine.step())
    for i, prompt in enumerate(prompts):
        assert results[f"r{i}"].tokens == hf_greedy("qwen2", prompt, 10)


def test_bf16_linears_are_left_alone() -> None:
    linears = DecodeLinears().install(model(bias=False).to(torch.bfloat16))
    assert linears.count == 0
