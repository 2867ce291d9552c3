"""Streamed text: incremental detokenisation and stop strings."""

from __future__ import annotations

from slinfer.services.worker.engine.base import FinishReason
from slinfer.services.worker.engine.detokenizer import IncrementalDetokenizer, StopStringMatcher

from .helpers import greedy, request, run_to_end

REPLACEMENT = "\ufffd"


def test_multi_token_characters_are_held_until_complete(make_engine) -> None:
    tokenizer = make_engine("llama").tokenizer
    text = "Grüße 日本語 🙂 déjà vu ✨"
    ids = tokenizer.encode(text)
    assert any(REPLACEMENT in tokenizer.decode([t]) for t in ids), "no split character to test"
    detok = IncrementalDetokenizer(tokenizer, context_ids=tokenizer.encode("Hi:"))
    deltas = [detok.push(t) for t in ids]
    assert all(REPLACEMENT not in d for d in deltas)
    assert "".join(deltas) + detok.flush() == text


def test_incomplete_character_is_flushed_at_the_end(make_engine) -> None:
    tokenizer = make_engine("llama").tokenizer
    ids = tokenizer.encode("🙂")
    detok = IncrementalDetokenizer(tokenizer, context_ids=[])
    assert [detok.push(t) for t in ids[:-1]] == [""] * (len(ids) - 1)
    assert detok.flush() == tokenizer.decode(ids[:-1])  # the replacement char, as decode gives


def test_stop_matcher_holds_back_possible_prefixes() -> None:
    matcher = StopStringMatcher(["STOP", "aab"])
    assert matcher.feed("Hello S") == ("Hello ", False)
    assert matcher.feed("T") == ("", False)
    assert matcher.feed("x aa") == ("STx ", False)
    assert matcher.feed("a") == ("a", False)  # "aaa": only the last "aa" may still match
    assert matcher.feed("b and more") == ("", True)
    assert StopStringMatcher(["STOP"]).feed("no stop here") == ("no stop here", False)
    tail = StopStringMatcher(["STOP"])
    assert tail.feed("end ST") == ("end ", False) and tail.flush() == "ST"


def _stop_spanning_two_deltas(outputs) -> str:
    """A 2-character string made of the last character of one token's text and the first of
    the next one's."""
    deltas = [o.text_delta for o in outputs]
    for left, right in zip(deltas, deltas[1:], strict=False):
        stop = left[-1:] + right[:1]
        if len(stop) == 2 and REPLACEMENT not in stop and stop.strip() == stop:
            return stop
    raise AssertionError(f"no usable token boundary in {deltas}")


def test_stop_string_spanning_tokens_is_cut_from_the_stream(make_engine) -> None:
    engine = make_engine("qwen2")
    prompt = engine.encode("Hello")
    full = run_to_end(engine, request("full", prompt, greedy(32)))["full"]
    stop = _stop_spanning_two_deltas(full.outputs)
    cut = full.text.find(stop)

    stopped = run_to_end(engine, request("stopped", prompt, greedy(32, stop=("zzz", stop))))[
        "stopped"
    ]
    assert stopped.text == full.text[:cut]
    assert stop not in stopped.text and all(stop not in o.text_delta for o in stopped.outputs)
    assert stopped.finish_reason is FinishReason.STOP
    # Generation ended with the token that completed the stop string.
    assert stopped.tokens == full.tokens[: len(stopped.tokens)]
    assert len(stopped.tokens) < len(full.tokens)


def test_deltas_concatenate_to_the_decoded_completion(make_engine) -> None:
    engine = make_engine("llama")
    got = run_to_end(engine, request("r", engine.encode("café 🙂"), greedy(40)))["r"]
    assert got.text == engine.tokenizer.decode(got.tokens, skip_special_tokens=True)
    assert got.finish_reason is FinishReason.LENGTH and len(got.tokens) == 40
