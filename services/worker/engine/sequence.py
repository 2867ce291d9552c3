"""The engine-side state of one admitted request."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from .base import EngineRequest, FinishReason
from .detokenizer import TextStream


class SeqStatus(enum.Enum):
    WAITING = "waiting"  # prefill pending (new, or preempted and to be recomputed)
    RUNNING = "running"  # its KV is in the pool; decoding
    FINISHED = "finished"


@dataclass(slots=True, eq=False)
class Sequence:
    request: EngineRequest
    arrival: int  # admission order; the youngest request yields KV first
    token_ids: list[int]  # prompt + resumed + generated
    text: TextStream
    generator: torch.Generator | None  # None for greedy requests
    num_cached: int = 0  # leading tokens whose KV is in the pool
    status: SeqStatus = SeqStatus.WAITING
    finish_reason: FinishReason | None = None
    new_token_ids: list[int] = field(default_factory=list)  # produced since the last output

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_prompt(self) -> int:
        return len(self.request.prompt_token_ids)

    @property
    def num_completion(self) -> int:
        """Generated tokens, counting those resumed from an earlier dispatch."""
        return len(self.token_ids) - self.num_prompt
