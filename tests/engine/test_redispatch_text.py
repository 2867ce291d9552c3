"""Lossless re-dispatch at the text level (services/scheduler/redispatch.py).

A stream cut at any token and resumed the way the worker resumes it (a fresh detokeniser whose
context is the prompt plus the resumed tokens) must give the client exactly the uninterrupted
run's tokens and text, including where the worker was holding text back at the cut (a
multi-byte character split over tokens, a suffix that could become a stop string).
"""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from slinfer.services.scheduler.redispatch import StreamProgress, text_after
from slinfer.services.worker.engine.detokenizer import TextStream
from slinfer.v1 import worker_pb2

TEXT = " héllo wörld ☃ snow, and xy then xyz — 日本語 done"


def _responses(tok, context, ids, stops):
    """What the worker streams for `ids` after `context` (one response per token)."""
    stream = TextStream(tok, context, stops)
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


@pytest.mark.parametrize("stops", [(), ("xyz",)])
def test_resume_at_every_cut_gives_the_uninterrupted_stream(tiny_models, stops) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_models["qwen2"], local_files_only=True)
    prompt = tok.encode("Once upon a time", add_special_tokens=False)
    ids = tok.encode(TEXT, add_special_tokens=False)
    reference = _responses(tok, prompt, ids, stops)
    ref_ids = [t for r in reference for t in r.token_ids]
    ref_text = "".join(r.text for r in reference)
    held_cuts = 0
    for cut in range(1, len(reference)):
        progress = StreamProgress()
        client = [progress.accept(r) for r in reference[:cut]]
        resume = progress.resume(tok, prompt, greedy=True)
        held_cuts += resume.skip_tokens > 0
        done = len(resume.resumed_token_ids)
        assert ref_ids[:done] == list(resume.resumed_token_ids)
        context = [*prompt, *resume.resumed_token_ids]
        client += [progress.accept(r) for r in _responses(tok, context, ref_ids[done:], stops)]
        got = [r for r in client if r is not None]
        assert [t for r in got for t in r.token_ids] == ref_ids, f"tokens differ at cut {cut}"
        assert "".join(r.text for r in got) == ref_text, f"text differs at cut {cut}"
        assert got[-1].finished
    assert held_cuts > 0, "some cut fell where the worker was holding text back"


def test_sampled_request_resumes_after_the_last_text_sent(tiny_models) -> None:
    """Resampled tokens differ, so nothing the client saw may be regenerated: the resume
    point keeps every token whose text was sent and drops only held-back ones."""
    tok = AutoTokenizer.from_pretrained(tiny_models["qwen2"], local_files_only=True)
    prompt = tok.encode("Once upon a time", add_special_tokens=False)
    ids = tok.encode(TEXT, add_special_tokens=False)
    reference = _responses(tok, prompt, ids, ("xyz",))
    dropped_somewhere = False
    for cut in range(1, len(reference)):
        progress = StreamProgress()
        for r in reference[:cut]:
            progress.accept(r)
        sent = progress.text
        resume = progress.resume(tok, prompt, greedy=False)
        k = len(resume.resumed_token_ids)
        assert list(resume.resumed_token_ids) == ids[:k] and resume.skip_tokens == 0
        assert text_after(tok, prompt, ids[:k]) == sent + resume.flush_text
        assert resume.flush_text == "" or k == cut
        dropped_somewhere |= k < cut
    assert dropped_somewhere, "some cut fell where text was held back"
