"""Lossless re-dispatch (DESIGN.md §1, §4): a preempted request continues its stream elsewhere.

The scheduler owns every request's stream. When a worker ends a stream with
FINISH_REASON_PREEMPTED, the dispatcher re-admits the request on another instance with the
tokens produced so far (`resumed_token_ids`); the engine recomputes their KV and continues.
The client must see no duplicated and no missing text, and a greedy request must read exactly
like an uninterrupted run. Two details make that true:

- A worker may hold text back at the cut (an incomplete UTF-8 character, or a suffix that
  could still become a stop string). So the request resumes from the last *clean point*: the
  largest response boundary k where the text sent for the first k tokens equals their full
  text. For a greedy request the tokens after k are regenerated identically; this module
  swallows them (and their already-sent text) from the new stream.
- A sampled request would not regenerate the same tokens, so it resumes from the last clean
  point after which no text was sent: the tokens it drops were never shown to the client.
  Only if there is none (rare: held text at every such boundary) does it resume with all its
  tokens and send the held-back text at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from loguru import logger

from slinfer.policy import DispatchView
from slinfer.v1 import worker_pb2

# What the worker's detokeniser decodes before the first generated token (detokenizer.py).
_CONTEXT_TOKENS = 5


def text_after(tokenizer: Any, context: Sequence[int], ids: Sequence[int]) -> str:
    """The text `ids` add after `context`, decoded as the worker's detokeniser does."""
    window = list(context[-_CONTEXT_TOKENS:])
    kwargs = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}
    base = tokenizer.decode(window, **kwargs)
    full = tokenizer.decode([*window, *ids], **kwargs)
    return full[len(base) :] if full.startswith(base) else full


@dataclass(frozen=True, slots=True)
class Resume:
    resumed_token_ids: tuple[int, ...]
    skip_tokens: int  # regenerated tokens the client already has
    skip_text: int  # characters of their text the client already has
    flush_text: str  # text held back at the cut, to send now (sampled requests)


@dataclass
class StreamProgress:
    """What the client has received so far, response by response."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    # (tokens, characters) sent after each response: the candidate clean points
    marks: list[tuple[int, int]] = field(default_factory=lambda: [(0, 0)])
    skip_tokens: int = 0
    skip_text: int = 0
    redispatches: int = 0

    def accept(self, resp: worker_pb2.SubmitResponse) -> worker_pb2.SubmitResponse | None:
        """The part of a worker response the client has not seen yet (None: nothing new)."""
        ids = list(resp.token_ids)
        text = resp.text
        if self.skip_tokens:
            n = min(self.skip_tokens, len(ids))
            ids, self.skip_tokens = ids[n:], self.skip_tokens - n
        if self.skip_text:
            n = min(self.skip_text, len(text))
            text, self.skip_text = text[n:], self.skip_text - n
        if not ids and not text and not resp.finished:
            return None
        self.token_ids.extend(ids)
        self.text += text
        if ids or text:
            self.marks.append((len(self.token_ids), len(self.text)))
        if len(ids) == len(resp.token_ids) and text == resp.text:
            return resp
        out = worker_pb2.SubmitResponse()
        out.CopyFrom(resp)
        del out.token_ids[:]
        out.token_ids.extend(ids)
        out.text = text
        return out

    def resume(self, tokenizer: Any | None, prompt_ids: Sequence[int], greedy: bool) -> Resume:
        """Where the next dispatch starts (see the module docstring)."""
        self.redispatches += 1
        n, sent = len(self.token_ids), len(self.text)
        if tokenizer is None:
            return Resume(tuple(self.token_ids), 0, 0, "")
        if not greedy:
            # Resampled tokens differ: resume where nothing the client saw is regenerated,
            # dropping only tokens whose text was never sent.
            for k, chars in reversed(self.marks):
                if chars < sent:
                    break
                if text_after(tokenizer, prompt_ids, self.token_ids[:k]) == self.text:
                    del self.token_ids[k:]
                    self.marks = [m for m in self.marks if m[0] <= k]
                    return Resume(tuple(self.token_ids), 0, 0, "")
            full = text_after(tokenizer, prompt_ids, self.token_ids)
            held = full[sent:] if full.startswith(self.text) else ""
            self.text += held
            return Resume(tuple(self.token_ids), 0, 0, held)
        for k, chars in reversed(self.marks):
            if text_after(tokenizer, prompt_ids, self.token_ids[:k]) == self.text[:chars]:
                self.skip_tokens, self.skip_text = n - k, sent - chars
                return Resume(tuple(self.token_ids[:k]), n - k, sent - chars, "")
        return Resume((), n, sent, "")  # unreachable: k = 0 always matches


def flush_response(request_id: str, text: str) -> worker_pb2.SubmitResponse:
    return worker_pb2.SubmitResponse(request_id=request_id, text=text)


TokenizerOf = Callable[[str], Any]


def tokenizer_for(tokenizer_of: TokenizerOf | None, model: dict[str, Any]) -> Any:
    """The model's tokenizer, or None (resume with all tokens; only held-back text at risk)."""
    if tokenizer_of is None:
        return None
    try:
        return tokenizer_of(model["path"])
    except Exception as exc:
        logger.warning("no tokenizer for model {}: {}", model.get("model_id"), exc)
        return None


def without_node(view: DispatchView, node_id: str) -> DispatchView:
    """The view with one node left out: a preempted request's room there went to the
    request that preempted it, so its re-dispatch looks elsewhere first."""
    devices = [d for d in view.devices.values() if d.node_id != node_id]
    return replace(
        view,
        devices=DispatchView.freeze_devices(devices),
        candidates=tuple(c for c in view.candidates if c.node_id != node_id),
    )
