"""Prompt rendering and tokenisation at the gateway, one tokenizer per model directory.

The scheduler owns each request's prompt tokens (it re-dispatches them after a preemption),
so it tokenises here and validates the context length before any worker is involved.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from slinfer.services.common.errors import FailedPrecondition, InvalidArgument

_ROLES = {"system", "user", "assistant"}
MAX_MESSAGES = 1024
MAX_PROMPT_CHARS = 1 << 20  # a prompt (or all messages) beyond this is refused, not tokenised


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str


class Prompts:
    def __init__(self) -> None:
        self._tokenizers: dict[str, Any] = {}
        self._lock = threading.Lock()

    def tokenizer(self, path: str) -> Any:
        with self._lock:
            tok = self._tokenizers.get(path)
            if tok is None:
                from transformers import AutoTokenizer

                try:
                    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
                except Exception as exc:  # a broken tokenizer is the deployer's to fix
                    raise FailedPrecondition(f"cannot load the tokenizer in {path}: {exc}") from exc
                self._tokenizers[path] = tok
            return tok

    def forget(self, path: str) -> None:
        with self._lock:
            self._tokenizers.pop(path, None)

    def encode(
        self,
        path: str,
        prompt: str,
        messages: Sequence[Message],
        token_ids: Sequence[int] = (),
        vocab_size: int = 0,
    ) -> list[int]:
        """Token ids of a raw prompt, of messages rendered with the chat template, or given."""
        given = sum(1 for x in (prompt, messages, token_ids) if x)
        if given != 1:
            raise InvalidArgument(
                "give exactly one of prompt (raw text), messages (chat) or prompt_token_ids; "
                + ("the prompt is empty" if given == 0 else "not both")
            )
        chars = len(prompt) + sum(len(m.content) for m in messages)
        if chars > MAX_PROMPT_CHARS:
            raise InvalidArgument(
                f"the prompt has {chars} characters, more than {MAX_PROMPT_CHARS}; shorten it"
            )
        if token_ids:
            bad = [t for t in token_ids if t < 0 or (vocab_size and t >= vocab_size)]
            if bad:
                raise InvalidArgument(
                    f"prompt_token_ids must be in [0, {vocab_size}); got {bad[:5]}"
                )
            return [int(t) for t in token_ids]
        tok = self.tokenizer(path)
        if prompt:
            ids = tok.encode(prompt, add_special_tokens=True)
        else:
            for m in messages:
                if m.role not in _ROLES:
                    raise InvalidArgument(
                        f"message role must be one of {sorted(_ROLES)}, got {m.role[:20]!r}"
                    )
                if not m.content:
                    raise InvalidArgument("message content must not be empty")
            if not getattr(tok, "chat_template", None):
                raise FailedPrecondition(
                    "this model has no chat template; send a raw prompt instead of messages"
                )
            try:
                rendered = tok.apply_chat_template(
                    [{"role": m.role, "content": m.content} for m in messages],
                    add_generation_prompt=True,
                    tokenize=False,
                )
            except Exception as exc:  # the template's own checks (role order, ...)
                raise InvalidArgument(
                    f"the model's chat template refused these messages: {exc}"
                ) from exc
            ids = tok.encode(rendered, add_special_tokens=False)
        if not ids:
            raise InvalidArgument("the prompt encodes to no tokens")
        return [int(i) for i in ids]
