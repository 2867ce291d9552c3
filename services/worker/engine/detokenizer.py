"""Incremental detokenisation and stop strings: the text a request streams.

Invariant: the deltas a request streams concatenate to exactly its final text, which is
`tokenizer.decode(generated ids, skip_special_tokens=True)` cut before the first stop string.

- `IncrementalDetokenizer` (the TGI / vLLM method): decode a short window of ids ending at the
  new token, and emit only what the new token appended to the window's text. A token that
  ends inside a multi-byte character decodes to U+FFFD; its text is held back until a later
  token completes the character (or the request ends).
- `StopStringMatcher` holds back the longest suffix of the text that could still become a stop
  string, so no stop string, even one spanning several tokens, is ever streamed.
- A resumed request (`TextStream.resumed`: re-dispatched after a preemption, its tokens so far
  given back) replays those tokens through a fresh stream started at the prompt, discarding
  what they stream (the earlier dispatch sent it): the stream is then in the state the
  earlier one was in at the cut, text held back included, and the deltas of the new tokens
  are exactly those an uninterrupted run with the same token ids would stream, whatever
  tokens the new dispatch generates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Prompt tokens decoded before the first generated one, so that the first token's text
# (leading spaces, merged characters) renders as it does in context.
CONTEXT_TOKENS = 5
_REPLACEMENT = "\ufffd"


def chat_token_ids(tokenizer: Any, messages: Sequence[dict[str, str]]) -> list[int]:
    """Token ids of a chat rendered with the model's chat template, ready to answer (the
    CPU engines' `encode_chat`)."""
    return list(
        tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=True, return_dict=False
        )
    )


class IncrementalDetokenizer:
    def __init__(self, tokenizer, context_ids: Sequence[int]) -> None:
        self._tokenizer = tokenizer
        self._ids = list(context_ids[-CONTEXT_TOKENS:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        text = self._decode(self._ids[self._prefix_offset :])
        if len(text) <= len(prefix_text) or text.endswith(_REPLACEMENT):
            return ""  # nothing yet, or an incomplete character: wait for more tokens
        delta = text[len(prefix_text) :]
        # Keep the window short: the next window starts where this one's new text began.
        self._ids = self._ids[self._read_offset :]
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        return delta

    def flush(self) -> str:
        """Text still held back (an incomplete character) when the request ends."""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        text = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return text[len(prefix_text) :] if len(text) > len(prefix_text) else ""

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )


class StopStringMatcher:
    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to stream, whether a stop string was found)."""
        if not self._stops:
            return text, False
        self._pending += text
        hits = [i for i in (self._pending.find(s) for s in self._stops) if i >= 0]
        if hits:
            emit, self._pending = self._pending[: min(hits)], ""
            return emit, True
        held = self._longest_stop_prefix_suffix()
        cut = len(self._pending) - held
        emit, self._pending = self._pending[:cut], self._pending[cut:]
        return emit, False

    def flush(self) -> str:
        emit, self._pending = self._pending, ""
        return emit

    def _longest_stop_prefix_suffix(self) -> int:
        """Length of the longest suffix of the pending text that is a proper prefix of a
        stop string."""
        best = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(self._pending)), best, -1):
                if self._pending.endswith(stop[:length]):
                    best = length
                    break
        return best


class TextStream:
    """The streamed text of one request: detokeniser followed by stop-string matching."""

    def __init__(self, tokenizer, context_ids: Sequence[int], stops: Sequence[str]) -> None:
        self._detokenizer = IncrementalDetokenizer(tokenizer, context_ids)
        self._matcher = StopStringMatcher(stops)
        self.text = ""  # everything streamed so far

    @classmethod
    def resumed(
        cls,
        tokenizer,
        prompt_ids: Sequence[int],
        resumed_ids: Sequence[int],
        stops: Sequence[str],
    ) -> TextStream:
        """The stream of a request whose first tokens were streamed by an earlier dispatch."""
        stream = cls(tokenizer, prompt_ids, stops)
        for token_id in resumed_ids:
            stream.push(token_id)
        stream.text = ""  # the client has it: only what follows is this dispatch's text
        return stream

    def push(self, token_id: int) -> tuple[str, bool]:
        """Returns (delta to stream, whether a stop string ended the text)."""
        emit, stopped = self._matcher.feed(self._detokenizer.push(token_id))
        self.text += emit
        return emit, stopped

    def finish(self) -> str:
        """Final delta when the request ends for a reason other than a stop string."""
        emit, stopped = self._matcher.feed(self._detokenizer.flush())
        if not stopped:
            emit += self._matcher.flush()
        self.text += emit
        return emit
