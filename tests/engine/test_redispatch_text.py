"""Lossless re-dispatch at the text level (services/scheduler/redispatch.py).

A stream cut at any token resumes the way the worker resumes it: with every token the client
has, replayed through a fresh text stream (`TextStream.resumed`). The client must then get
every token exactly once and the text of an uninterrupted run with the same token ids,
including where the worker was holding text back at the cut (a multi-byte character split
over tokens, a suffix that could become a stop string) and whatever tokens the new dispatch
generates (a recompute in another batch or dtype may break a greedy near-tie differently).
"""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from slinfer.services.scheduler.redispatch import StreamProgress
from slinfer.services.worker.engine.detokenizer import TextStream
from slinfer.v1 import worker_pb2

from .helpers import greedy, request, run_to_end

TEXT = " héllo wörld ☃ snow, and xy then xyz — 日本語 done"
OTHER = " ünïcödé → 한국어 and xyz again"


def _responses(stream: TextStream, ids: list[int]) -> list[worker_pb2.SubmitResponse]:
    """What the worker streams for `ids` (one response per token) from `stream`'s state."""
    out = []
    for i, t in enumerate(ids):
        delta, stopped = stream.push(t)
        last = stopped or i == len(ids) - 1
        if last and not stopped:
            delta += stream.finish()
        out.append(worker_pb2.SubmitResponse(token_ids=[t], text=delta, finished=last))
        if stopped:
            break
    return out


def _client(responses: list[worker_pb2.SubmitResponse]) -> tuple[list[int], str]:
    return [t for r in responses for t in r.token_ids], "".join(r.text for r in responses)


@pytest.mark.parametrize("stops", [(), ("xyz",), ("ö", "日本")])
def test_resume_at_every_cut_gives_the_stream_of_the_same_ids(tiny_models, stops) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_models["qwen2"], local_files_only=True)
    prompt = tok.encode("Once upon a time", add_special_tokens=False)
    ids = tok.encode(TEXT, add_special_tokens=False)
    other = tok.encode(OTHER, add_special_tokens=False)
    reference = _responses(TextStream(tok, prompt, stops), ids)
    held_cuts = 0
    for cut in range(1, len(reference)):
        progress = StreamProgress()
        sent = [progress.accept(r) for r in reference[:cut]]
        resumed = progress.resume()
        assert resumed == tuple(ids[:cut]), "the resume point is everything the client has"
        # Held back at the cut: what was sent differs from what a stream ending there gives.
        ended_here = _client(_responses(TextStream(tok, prompt, stops), ids[:cut]))[1]
        held_cuts += "".join(r.text for r in reference[:cut]) != ended_here
        # The new dispatch generates either the same tokens or others (a near-tie broken the
        # other way): either way the client reads the stream of the ids it received.
        for tail in (ids[cut:], other):
            stream = TextStream.resumed(tok, prompt, resumed, stops)
            got = sent + _responses(stream, tail)
            got_ids, got_text = _client(got)
            uninterrupted = _responses(TextStream(tok, prompt, stops), [*ids[:cut], *tail])
            want_ids, want_text = _client(uninterrupted)
            assert got_ids == want_ids, f"tokens differ at cut {cut}"
            assert got_text == want_text, f"text differs at cut {cut}"
            assert got[-1].finished
    assert held_cuts > 0, "some cut fell where the worker was holding text back"


def stream_of(tok, prompt: list[int], ids: list[int], stops: tuple[str, ...]) -> str:
    """The text an uninterrupted stream of `ids` gives (the oracle of the tests below)."""
    return _client(_responses(TextStream(tok, prompt, stops), ids))[1]


@pytest.mark.parametrize("with_stop", [False, True])
def test_engine_resumed_at_every_cut_streams_the_text_of_its_tokens(make_engine, with_stop):
    """The PyTorch engine itself: a greedy answer cut at every token and resumed there reads
    as the stream of the tokens the client received (a stop string straddling the cut is
    found), and ends with the requested length or at the stop string."""
    engine = make_engine("qwen2")
    tok = engine.tokenizer
    prompt = engine.encode("Grüße aus 日本")
    full = run_to_end(engine, request("full", prompt, greedy(12)))["full"]
    stops: tuple[str, ...] = ()
    if with_stop:  # two characters across the boundary of two tokens' text
        deltas = [o.text_delta for o in full.outputs]
        k = next(i for i in range(4, len(deltas)) if deltas[i - 1][-1:].strip() and deltas[i][:1])
        stops = (deltas[k - 1][-1] + deltas[k][0],)
        full = run_to_end(engine, request("stopped", prompt, greedy(12, stop=stops)))["stopped"]
        assert full.finish_reason.value == "stop"
    for cut in range(1, len(full.outputs)):
        first = full.outputs[:cut]
        resumed = tuple(t for o in first for t in o.new_token_ids)
        rid = f"c{cut}"
        rest = run_to_end(engine, request(rid, prompt, greedy(12, stop=stops), resumed))[rid]
        ids = [*resumed, *rest.tokens]
        text = "".join(o.text_delta for o in first) + rest.text
        assert text == stream_of(tok, prompt, ids, stops), f"cut {cut}"
        assert rest.outputs[-1].completion_tokens == len(ids)
        assert len(ids) == 12 or rest.finish_reason.value == "stop"
