"""The text a request streams from the vLLM engine (docs/VLLM.md, "Resumed requests").

vLLM detokenises incrementally itself; what it holds back at the end (an incomplete UTF-8
sequence) is flushed from the full decode, as transformers' `decode` and the PyTorch engine
give it. A resumed request (re-dispatched after a preemption) is different: vLLM sees the
resumed tokens as prompt, so text held back at the cut would be lost and a stop string
straddling it missed. Its text therefore comes from the PyTorch engine's stream
(`TextStream.resumed`, detokenizer.py), replayed over the resumed tokens; its stop strings
are matched there, not by vLLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from slinfer.services.worker.engine.detokenizer import TextStream


@dataclass(slots=True)
class TrackedRequest:
    prompt_tokens: int
    resumed_tokens: int
    generated: int = 0
    new_ids: list[int] = field(default_factory=list)
    streamed: str = ""  # text vLLM sent for new_ids so far
    resumed_text: TextStream | None = None  # resumed requests only (module docstring)

    @classmethod
    def start(
        cls, tokenizer: Any, prompt: Sequence[int], resumed: Sequence[int], stops: Sequence[str]
    ) -> TrackedRequest:
        stream = TextStream.resumed(tokenizer, prompt, resumed, stops) if resumed else None
        return cls(len(prompt), len(resumed), resumed_text=stream)

    def text(self, completion: Any, finished: bool, tokenizer: Any) -> tuple[str, int, bool]:
        """(text delta, new tokens it covers, whether a stop string we match ended it)."""
        new_ids = list(completion.token_ids)
        if self.resumed_text is not None:
            delta = ""
            for i, token_id in enumerate(new_ids):
                piece, stopped = self.resumed_text.push(token_id)
                delta += piece
                if stopped:
                    self._count(new_ids[: i + 1])
                    return delta, i + 1, True
            self._count(new_ids)
            if finished:
                delta += self.resumed_text.finish()
            return delta, len(new_ids), False
        self._count(new_ids)
        text = completion.text
        self.streamed += text
        if finished and completion.stop_reason is None:  # not a stop string: flush the tail
            full = tokenizer.decode(self.new_ids, skip_special_tokens=True)
            text += full[len(self.streamed) :] if full.startswith(self.streamed) else ""
        return text, len(new_ids), False

    def _count(self, new_ids: list[int]) -> None:
        self.generated += len(new_ids)
        self.new_ids.extend(new_ids)
