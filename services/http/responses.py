"""OpenAI response bodies and stream chunks, built as plain dicts (the hot path: one chunk per
gateway message, no model objects)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from slinfer.services.http.protocol import Kind
from slinfer.v1 import common_pb2, gateway_pb2

FINISH = {
    common_pb2.FINISH_REASON_STOP: "stop",
    common_pb2.FINISH_REASON_LENGTH: "length",
    common_pb2.FINISH_REASON_ABORT: "abort",  # vLLM's word: deleted model, worker shutdown
}
DONE = b"data: [DONE]\n\n"


def usage(final: gateway_pb2.Completion) -> dict[str, int]:
    return {
        "prompt_tokens": final.prompt_tokens,
        "completion_tokens": final.completion_tokens,
        "total_tokens": final.prompt_tokens + final.completion_tokens,
    }


def sse(payload: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


@dataclass
class Reply:
    """The identity every body and chunk of one response repeats."""

    kind: Kind
    id: str
    model: str
    include_usage: bool = False
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def object_name(self) -> str:
        return "chat.completion" if self.kind == "chat" else "text_completion"

    def full(self, text: str, final: gateway_pb2.Completion) -> dict[str, object]:
        reason = FINISH.get(final.finish_reason, "stop")
        if self.kind == "chat":
            choice: dict[str, object] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": reason,
            }
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        return {
            "id": self.id,
            "object": self.object_name,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage(final),
        }

    def _chunk(self, choices: list[dict[str, object]]) -> dict[str, object]:
        out: dict[str, object] = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.kind == "chat" else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            out["usage"] = None
        return out

    def _choice(
        self, text: str | None, reason: str | None, role: bool = False
    ) -> dict[str, object]:
        if self.kind == "chat":
            delta: dict[str, str] = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": reason}

    def first_chunk(self) -> bytes | None:
        """Chat streams open with the assistant's role (OpenAI does); completions do not."""
        if self.kind != "chat":
            return None
        return sse(self._chunk([self._choice("", None, role=True)]))

    def text_chunk(self, text: str) -> bytes:
        return sse(self._chunk([self._choice(text, None)]))

    def final_chunks(self, final: gateway_pb2.Completion) -> bytes:
        reason = FINISH.get(final.finish_reason, "stop")
        out = sse(self._chunk([self._choice(None if self.kind == "chat" else "", reason)]))
        if self.include_usage:
            last = self._chunk([])
            last["usage"] = usage(final)
            out += sse(last)
        return out + DONE
