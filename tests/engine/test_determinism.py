"""Batch-invariant decoding (`deterministic`) and per-request fault isolation in the CPU engine.

What `deterministic` promises (docs/RELIABILITY.md, "Determinism"): a request's logits, and so
its tokens with a seed or greedy, are bit for bit the same whatever else is batched with it
and when it is resumed with its tokens so far (after a preemption or a failover), on the same
hardware label (CPU, dtype, threads). The tests compare the logits bits themselves, not only
the tokens: the tiny models' peaked logits would give equal tokens for other reasons.
"""

from __future__ import annotations

import torch

from slinfer.services.worker.engine.base import FinishReason, SamplingParams
from slinfer.services.worker.engine.torch_engine import TorchEngine

from .helpers import collect, request, run_to_end

PROMPT = [5, 17, 42, 7, 99, 3, 64, 12]
OTHERS = [[8, 9, 10, 11], [3, 1, 4, 1, 5, 9, 2, 6, 5, 3], [77, 66, 55]]


def _recording(engine: TorchEngine) -> dict[tuple[str, int], torch.Tensor]:
    """Every (request, token index) -> the logits its token was sampled from."""
    seen: dict[tuple[str, int], torch.Tensor] = {}
    original = engine._sample

    def sample(seq, logits, index):  # noqa: ANN001, ANN202
        seen[(seq.request_id, index)] = logits.detach().clone()
        return original(seq, logits, index)

    engine._sample = sample  # type: ignore[method-assign]
    return seen


def _params(deterministic: bool, temperature: float = 0.0, n: int = 24) -> SamplingParams:
    return SamplingParams(
        temperature=temperature, max_tokens=n, seed=1234, ignore_eos=True,
        deterministic=deterministic,
    )  # fmt: skip


_INTS = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and torch.equal(a.view(_INTS[a.dtype]), b.view(_INTS[b.dtype]))


def test_deterministic_logits_do_not_depend_on_the_batch(make_engine) -> None:
    alone_engine = make_engine()
    alone_seen = _recording(alone_engine)
    alone = run_to_end(alone_engine, request("d", PROMPT, _params(True)))["d"].tokens

    batched_engine = make_engine()
    seen = _recording(batched_engine)
    # Others join at different iterations, so the batch size changes under the request.
    batched_engine.add_request(request("o0", OTHERS[0], _params(False, n=30)))
    batched_engine.add_request(request("d", PROMPT, _params(True)))
    results: dict = {}
    for step in range(200):
        if step == 3:
            batched_engine.add_request(request("o1", OTHERS[1], _params(False, n=10)))
        if step == 7:
            batched_engine.add_request(request("o2", OTHERS[2], _params(False, n=40)))
        if not batched_engine.has_work():
            break
        collect(results, batched_engine.step())
    assert results["d"].tokens == alone
    for index in range(len(alone)):
        assert _bits_equal(seen[("d", index)], alone_seen[("d", index)]), f"token {index}"


def test_deterministic_resume_recomputes_bit_for_bit(make_engine) -> None:
    """A resumed request replays its tokens one by one, as they were first computed: the
    logits of every token after the cut are those of the uninterrupted run."""
    engine = make_engine()
    seen = _recording(engine)
    full = run_to_end(engine, request("d", PROMPT, _params(True)))["d"]
    for cut in (1, 5, 17):
        resumed_engine = make_engine()
        resumed_seen = _recording(resumed_engine)
        resumed_engine.add_request(request("o", OTHERS[1], _params(False, n=30)))
        rest = run_to_end(
            resumed_engine, request("d", PROMPT, _params(True), tuple(full.tokens[:cut]))
        )["d"]
        assert rest.tokens == full.tokens[cut:], f"cut {cut}"
        for index in range(cut, len(full.tokens)):
            assert _bits_equal(resumed_seen[("d", index)], seen[("d", index)])
        assert resumed_engine._replay_mismatches == 0


def test_seeded_sampling_is_the_same_across_batch_and_resume(make_engine) -> None:
    params = _params(True, temperature=1.0)
    full = run_to_end(make_engine(), request("s", PROMPT, params))["s"].tokens
    engine = make_engine()
    engine.add_request(request("o", OTHERS[0], _params(False, temperature=0.7, n=30)))
    batched = run_to_end(engine, request("s", PROMPT, params))["s"].tokens
    resumed = run_to_end(make_engine(), request("s", PROMPT, params, tuple(full[:9])))["s"]
    assert batched == full
    assert full[:9] + resumed.tokens == full


def test_a_failing_request_ends_alone(make_engine) -> None:
    """An engine failure one request causes (here: non-finite logits for its rows) ends
    that request with FinishReason.ERROR; its batch mates finish normally."""
    engine = make_engine()
    original = engine._forward

    def forward(batch, pool):  # noqa: ANN001, ANN202
        logits = original(batch, pool).clone()
        for row, seq in enumerate(batch):
            if seq.request_id == "bad" and seq.num_completion >= 2:
                logits[row] = float("nan")
        return logits

    engine._forward = forward  # type: ignore[method-assign]
    results = run_to_end(
        engine,
        request("a", OTHERS[0], _params(False, n=12)),
        request("bad", PROMPT, _params(False, n=12)),
        request("b", OTHERS[1], _params(False, temperature=0.8, n=12)),
    )
    assert results["bad"].finish_reason is FinishReason.ERROR
    assert "non-finite" in results["bad"].outputs[-1].error
    assert len(results["bad"].tokens) == 2
    for rid in ("a", "b"):
        assert results[rid].finish_reason is FinishReason.LENGTH
        assert len(results[rid].tokens) == 12
    assert not engine.has_work() and engine.stats().kv_used_tokens == 0


def test_a_forward_that_raises_is_isolated_by_running_requests_alone(make_engine) -> None:
    engine = make_engine()
    original = engine._forward

    def forward(batch, pool):  # noqa: ANN001, ANN202
        if any(seq.request_id == "bad" for seq in batch):
            raise RuntimeError("kernel fault")
        return original(batch, pool)

    engine._forward = forward  # type: ignore[method-assign]
    results = run_to_end(
        engine,
        request("a", OTHERS[0], _params(False, n=6)),
        request("bad", PROMPT, _params(False, n=6)),
    )
    assert results["bad"].finish_reason is FinishReason.ERROR
    assert "kernel fault" in results["bad"].outputs[-1].error
    assert results["a"].finish_reason is FinishReason.LENGTH and len(results["a"].tokens) == 6
