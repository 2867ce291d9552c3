"""slinfer's side of the requests an OpenVINO pipeline runs: tokens, text, KV accounting.

The pipeline owns the KV blocks, but it must never run out of them: a sequence that cannot
grow is dropped by it (status IGNORED), and its scheduler recomputes requests on its own,
unseen by the worker. So the engine keeps the pipeline inside its pool by construction:
before every step it counts the blocks the next iteration needs (each request's context, the
token fed this step included, in whole blocks) and, if they exceed the pool, takes the
youngest request out of the pipeline (recompute preemption, as the PyTorch engine does): it
waits with all its tokens and is re-added as prompt + tokens so far when blocks are free.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from slinfer.services.worker.engine.base import EngineRequest, FinishReason
from slinfer.services.worker.engine.detokenizer import TextStream


class OvStatus(enum.Enum):
    WAITING = "waiting"  # not in the pipeline: new, or preempted (its tokens kept)
    RUNNING = "running"  # added to the pipeline (prefill pending or decoding)
    FINISHED = "finished"


@dataclass(slots=True, eq=False)
class OvSequence:
    request: EngineRequest
    arrival: int
    token_ids: list[int]  # prompt + resumed + generated
    text: TextStream
    status: OvStatus = OvStatus.WAITING
    handle: Any = None  # the pipeline's GenerationHandle while RUNNING
    pipeline_id: int = -1  # the id it was added under (unique per add)
    fed: int = 0  # tokens the pipeline has seen (its prompt at the add, + generated since)
    finish_reason: FinishReason | None = None
    seed_offset: int = 0  # re-adds after a preemption draw from a shifted seed
    outputs: list[int] = field(default_factory=list)

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
        return len(self.token_ids) - self.num_prompt

    @property
    def remaining(self) -> int:
        return self.request.sampling.max_tokens - self.num_completion


def blocks(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


@dataclass(frozen=True, slots=True)
class KvPlan:
    admit: tuple[OvSequence, ...]  # waiting requests that fit, oldest first
    preempt: tuple[OvSequence, ...]  # running requests to take out (youngest first)
    truncate: tuple[OvSequence, ...]  # requests that cannot fit even alone


def plan_kv(
    running: list[OvSequence],
    waiting: list[OvSequence],
    capacity_blocks: int,
    block_size: int,
    max_batch: int,
) -> KvPlan:
    """Which requests the next step may hold so that the pool always suffices.

    A running request needs the blocks of its whole context (the token it feeds this step
    included); a waiting one joins only if its context fits next to them. Only a request
    whose context exceeds the whole pool is truncated.
    """
    keep = sorted(running, key=lambda s: s.arrival)
    truncate = [s for s in keep if blocks(s.num_tokens, block_size) > capacity_blocks]
    keep = [s for s in keep if s not in truncate]
    preempt: list[OvSequence] = []
    while keep and sum(blocks(s.num_tokens, block_size) for s in keep) > capacity_blocks:
        preempt.append(keep.pop())  # the youngest yields its blocks
    used = sum(blocks(s.num_tokens, block_size) for s in keep)
    admit: list[OvSequence] = []
    for seq in sorted(waiting, key=lambda s: s.arrival):
        need = blocks(seq.num_tokens, block_size)
        if need > capacity_blocks:
            truncate.append(seq)
            continue
        if preempt or len(keep) + len(admit) >= max_batch or used + need > capacity_blocks:
            break  # FIFO: nobody overtakes an older waiting request
        admit.append(seq)
        used += need
    return KvPlan(tuple(admit), tuple(preempt), tuple(truncate))
