"""Per-request sampling parameters."""

from __future__ import annotations

import pytest
import torch

from slinfer.services.worker.engine.base import FinishReason, InvalidRequest, SamplingParams
from slinfer.services.worker.engine.sampling import make_generator, sample_next_tokens, top_p_filter

from .helpers import collect, greedy, request, run_to_end

PROMPT = "The capital of France is"


def sampled(seed: int | None, max_tokens: int = 16, **kw) -> SamplingParams:
    return SamplingParams(
        temperature=kw.pop("temperature", 1.0), max_tokens=max_tokens, seed=seed, **kw
    )


def test_seeded_sampling_is_reproducible(make_engine) -> None:
    engine = make_engine("llama")
    prompt = engine.encode(PROMPT)
    alone = run_to_end(engine, request("a", prompt, sampled(7)))["a"].tokens
    again = run_to_end(engine, request("b", prompt, sampled(7)))["b"].tokens
    assert alone == again
    assert run_to_end(engine, request("d", prompt, sampled(8)))["d"].tokens != alone


def test_each_request_draws_from_its_own_generator(make_engine, monkeypatch) -> None:
    """Batch mates never touch a request's random stream: every iteration hands each row its
    own request's generator (and greedy rows none). Batch composition may still move a
    request's logits by rounding (bf16 above all), so its tokens in a batch are not promised
    to be those it draws alone; its draws are."""
    import slinfer.services.worker.engine.batch_runner as torch_engine  # where it samples

    engine = make_engine("llama")
    prompt = engine.encode(PROMPT)
    calls: list[list[torch.Generator | None]] = []
    original = torch_engine.sample_next_tokens

    def spy(logits, params, generators):  # noqa: ANN001, ANN202
        calls.append(list(generators))
        return original(logits, params, generators)

    monkeypatch.setattr(torch_engine, "sample_next_tokens", spy)
    others = [engine.encode(p) for p in ("Hello", "café 🙂")]
    specs = {
        "x": (others[0], sampled(123, max_tokens=5)),
        "c": (prompt, sampled(7)),
        "y": (others[1], greedy(20)),
        "z": (prompt, sampled(None)),
    }
    for rid, (p, params) in specs.items():
        engine.add_request(request(rid, p, params))
    owners = {rid: engine._find(rid).generator for rid in specs}  # white-box
    results: dict = {}
    while engine.has_work():
        collect(results, engine.step())
    assert owners["y"] is None
    sampled_ids = {id(g) for rid, g in owners.items() if rid != "y"}
    assert len(sampled_ids) == 3, "one generator per sampled request"
    assert calls
    for gens in calls:  # each iteration: every row its own request's generator, none shared
        drawn = [id(g) for g in gens if g is not None]
        assert len(drawn) == len(set(drawn)) and set(drawn) <= sampled_ids
    assert len(results["c"].tokens) == 16 and len(results["x"].tokens) == 5


def test_a_row_draw_depends_on_its_logits_and_generator_only() -> None:
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0))
    params = [sampled(7), greedy(1), sampled(None), sampled(3)]
    solo = make_generator(7)
    alone = [sample_next_tokens(logits[:1], params[:1], [solo])[0] for _ in range(5)]
    gens = [make_generator(7), None, make_generator(None), make_generator(3)]
    batched = [sample_next_tokens(logits, params, gens)[0] for _ in range(5)]
    assert alone == batched


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
