"""Continuous batching: one forward pass per iteration for the whole batch."""

from __future__ import annotations

from slinfer.services.worker.engine.base import Phase

from .helpers import collect, greedy, request, run_to_end


def test_concurrent_requests_share_iterations(make_engine, hf_greedy) -> None:
    engine = make_engine("qwen2")
    prompts = [engine.encode(p) for p in ("Hello", "Numbers: 1 2 3", "café 🙂")]
    lengths = [6, 12, 18]
    requests = [
        request(f"r{i}", p, greedy(n))
        for i, (p, n) in enumerate(zip(prompts, lengths, strict=True))
    ]
    results = run_to_end(engine, *requests)
    # One prefill iteration for all three, then the batch shrinks as each one finishes.
    assert list(engine.stats().batch_sizes) == [3] * 6 + [2] * 6 + [1] * 6
    for i, (prompt, n) in enumerate(zip(prompts, lengths, strict=True)):
        assert results[f"r{i}"].tokens == hf_greedy("qwen2", prompt, n)  # same as alone


def test_request_added_while_another_decodes_joins_next_iteration(make_engine, hf_greedy) -> None:
    engine = make_engine("llama")
    first, second = engine.encode("The capital of France is"), engine.encode("Hello")
    engine.add_request(request("first", first, greedy(16)))
    results: dict = {}
    for _ in range(3):
        collect(results, engine.step())
    assert engine.stats().running == 1

    engine.add_request(request("second", second, greedy(8)))
    joined = engine.step()
    collect(results, joined)
    # The newcomer's prefill and the first request's decode ran in the same forward pass.
    assert joined.phase is Phase.PREFILL and joined.batch_size == 2
    assert {o.request_id for o in joined.outputs} == {"first", "second"}
    assert joined.context_tokens == (len(first) + 3) + len(second)
    while engine.has_work():
        result = engine.step()
        collect(results, result)
    assert results["first"].tokens == hf_greedy("llama", first, 16)
    assert results["second"].tokens == hf_greedy("llama", second, 8)
    assert list(engine.stats().batch_sizes) == [1, 1, 1] + [2] * 8 + [1] * 5


def test_token_budget_splits_prefills(make_engine, hf_greedy) -> None:
    engine = make_engine("llama", max_batched_tokens=8)
    prompts = [engine.encode(p) for p in ("Grüße aus 日本", "Hello")]  # 12 and 4 tokens
    results = run_to_end(engine, *(request(f"r{i}", p, greedy(4)) for i, p in enumerate(prompts)))
    # The 12-token prompt exceeds the budget alone (allowed: nothing may starve); the second
    # prompt waits one iteration and then joins the first one's decode.
    assert list(engine.stats().batch_sizes)[:2] == [1, 2]
    for i, prompt in enumerate(prompts):
        assert results[f"r{i}"].tokens == hf_greedy("llama", prompt, 4)
