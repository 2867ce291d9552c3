"""Per-request sampling parameters."""

from __future__ import annotations

import pytest
import torch

from slinfer.services.worker.engine.base import FinishReason, InvalidRequest, SamplingParams
from slinfer.services.worker.engine.sampling import top_p_filter

from .helpers import greedy, request, run_to_end

PROMPT = "The capital of France is"


def sampled(seed: int | None, max_tokens: int = 16, **kw) -> SamplingParams:
    return SamplingParams(temperature=kw.pop("temperature", 1.0), max_tokens=max_tokens,
                          seed=seed, **kw)


def test_seeded_sampling_is_reproducible_and_independent_of_batch_mates(make_engine) -> None:
    engine = make_engine("llama")
    prompt = engine.encode(PROMPT)
    alone = run_to_end(engine, request("a", prompt, sampled(7)))["a"].tokens
    again = run_to_end(engine, request("b", prompt, sampled(7)))["b"].tokens
    assert alone == again

    others = [engine.encode(p) for p in ("Hello", "café 🙂")]
    batch = run_to_end(
        engine,
        request("x", others[0], sampled(123, max_tokens=5)),
        request("c", prompt, sampled(7)),
        request("y", others[1], greedy(20)),
        request("z", prompt, sampled(None)),
    )
    assert batch["c"].tokens == alone
    assert run_to_end(engine, request("d", prompt, sampled(8)))["d"].tokens != alone


def test_tiny_top_p_is_greedy(make_engine) -> None:
    engine = make_engine("qwen2")
    prompt = engine.encode(PROMPT)
    got = run_to_end(
        engine,
        request("nucleus", prompt, sampled(None, top_p=1e-6, temperature=0.8)),
        request("greedy", prompt, greedy(16)),
    )
    assert got["nucleus"].tokens == got["greedy"].tokens


def test_top_p_filter_keeps_the_smallest_covering_set() -> None:
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])
    assert top_p_filter(probs, 0.7).tolist() == pytest.approx([0.0, 0.5, 0.0, 0.3])
    assert top_p_filter(probs, 0.5).tolist() == pytest.approx([0.0, 0.5, 0.0, 0.0])
    assert top_p_filter(probs, 1.0) is probs


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=-0.5),
        SamplingParams(top_p=0.0),
        SamplingParams(top_p=1.5),
        SamplingParams(max_tokens=0),
    ],
)
def test_bad_sampling_parameters_are_refused_without_trace(make_engine, params) -> None:
    engine = make_engine("llama")
    before = engine.stats()
    with pytest.raises(InvalidRequest):
        engine.add_request(request("bad", engine.encode(PROMPT), params))
    assert engine.stats() == before and not engine.has_work()


def test_max_tokens_finishes_with_length(make_engine) -> None:
    engine = make_engine("llama")
    got = run_to_end(engine, request("r", engine.encode(PROMPT), sampled(3, max_tokens=5)))["r"]
    assert len(got.tokens) == 5 and got.finish_reason is FinishReason.LENGTH
    assert [o.completion_tokens for o in got.outputs] == [1, 2, 3, 4, 5]
    assert [o.finished for o in got.outputs] == [False] * 4 + [True]
