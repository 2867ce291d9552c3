"""What one iteration of the CPU engine computes (docs/ENGINE.md, "Scheduling").

Every iteration carries all running requests' decode tokens, plus as many waiting prefills
(oldest first) as fit the token budget and the pool: one forward pass for the whole batch.

KV exhaustion during decode: a running request that cannot get a block for its next token
makes the *youngest* request holding blocks yield them: that request goes back to waiting
(its tokens are kept) and is recomputed by a later prefill, invisibly to the client. A
request that cannot fit even in the otherwise empty pool is finished with LENGTH, unless the
pool is elastic (resized from outside as its requests grow: the worker's memory agent): then
it waits, keeping its blocks, for the growth already asked for, rather than ending short.
"""

from __future__ import annotations

from dataclasses import dataclass

from .kv_pool import KVPool
from .sequence import SeqStatus, Sequence


@dataclass(frozen=True, slots=True)
class IterationPlan:
    prefills: tuple[Sequence, ...]  # compute token_ids[num_cached:] (the whole context)
    decodes: tuple[Sequence, ...]  # compute the last token
    preempted: tuple[Sequence, ...]  # moved back to waiting, KV released
    truncated: tuple[Sequence, ...]  # can never fit the pool: finish with LENGTH

    @property
    def scheduled(self) -> tuple[Sequence, ...]:
        return self.prefills + self.decodes

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


class Scheduler:
    def __init__(self, max_batched_tokens: int, max_batch_size: int, elastic: bool = False) -> None:
        self.max_batched_tokens = max_batched_tokens
        self.max_batch_size = max_batch_size
        self.elastic = elastic
        self.waiting: list[Sequence] = []  # in arrival order
        self.running: list[Sequence] = []  # in arrival order

    def add(self, seq: Sequence) -> None:
        seq.status = SeqStatus.WAITING
        self._insert_waiting(seq)

    def remove(self, seq: Sequence) -> None:
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)

    def all(self) -> list[Sequence]:
        return self.running + self.waiting

    def schedule(self, pool: KVPool) -> IterationPlan:
        preempted: list[Sequence] = []
        truncated: list[Sequence] = []
        decodes = self._grow_running(pool, preempted, truncated)
        prefills = self._admit_prefills(pool, len(decodes), preempted, truncated)
        for seq in prefills:
            self.waiting.remove(seq)
            seq.status = SeqStatus.RUNNING
        self.running = sorted(self.running + prefills, key=lambda s: s.arrival)
        return IterationPlan(tuple(prefills), tuple(decodes), tuple(preempted), tuple(truncated))

    def _grow_running(
        self, pool: KVPool, preempted: list[Sequence], truncated: list[Sequence]
    ) -> list[Sequence]:
        decodes: list[Sequence] = []
        for seq in list(self.running):  # oldest first
            if seq.status is not SeqStatus.RUNNING:
                continue  # preempted while an older request grew
            while not pool.reserve(seq.request_id, seq.num_tokens):
                victim = self._youngest_holder(pool)
                if victim is seq and pool.holders() == [seq.request_id]:
                    if not self.elastic:
                        self._drop(seq, pool)
                        truncated.append(seq)
                    break  # elastic: it sits this iteration out, holding its blocks
                self._preempt(victim, pool)
                preempted.append(victim)
                if victim in decodes:
                    decodes.remove(victim)
                if victim is seq:
                    break
            else:
                decodes.append(seq)
        return decodes

    def _admit_prefills(
        self,
        pool: KVPool,
        num_decodes: int,
        preempted: list[Sequence],
        truncated: list[Sequence],
    ) -> list[Sequence]:
        prefills: list[Sequence] = []
        budget = self.max_batched_tokens - num_decodes
        for seq in list(self.waiting):
            if seq in preempted:
                continue  # it just yielded its blocks; taking them back would thrash
            if num_decodes + len(prefills) >= self.max_batch_size:
                break
            num_new = seq.num_tokens - seq.num_cached
            # The first prefill of an iteration may exceed the budget, so none starves.
            if num_new > budget and (prefills or num_decodes):
                break
            # +1: the first decode after the prefill must find a slot.
            if not pool.reserve(seq.request_id, seq.num_tokens + 1):
                too_big = pool.spec.blocks_for(seq.num_tokens + 1) > pool.num_blocks
                if too_big and not self.elastic:
                    self._drop(seq, pool)
                    truncated.append(seq)
                # Otherwise wait for blocks; later requests that already hold theirs may go.
                continue
            prefills.append(seq)
            budget -= num_new
        return prefills

    def _youngest_holder(self, pool: KVPool) -> Sequence:
        holders = [s for s in self.all() if pool.holds(s.request_id)]
        return max(holders, key=lambda s: s.arrival)

    def _preempt(self, seq: Sequence, pool: KVPool) -> None:
        pool.release(seq.request_id)
        seq.num_cached = 0
        if seq.status is SeqStatus.RUNNING:
            self.running.remove(seq)
            self.add(seq)

    def _drop(self, seq: Sequence, pool: KVPool) -> None:
        pool.release(seq.request_id)
        self.remove(seq)

    def _insert_waiting(self, seq: Sequence) -> None:
        index = len(self.waiting)
        while index > 0 and self.waiting[index - 1].arrival > seq.arrival:
            index -= 1
        self.waiting.insert(index, seq)
