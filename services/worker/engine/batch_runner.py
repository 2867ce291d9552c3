"""One forward pass of the CPU engine over a group of requests, with failures isolated.

`TorchEngine.step` groups an iteration's requests: the shared ones in one packed forward pass,
each deterministic one alone (batch invariance, docs/RELIABILITY.md). `BatchRunner._run` runs
a group and samples each request's token. A failure is isolated: a group whose forward pass
raises is run again request by request, non-finite logits and sampling errors fail their row
only, and the request that fails alone ends with FinishReason.ERROR while its neighbours go on.
A forward pass writes only its own tokens' KV slots, so running it again is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from typing import TYPE_CHECKING

import torch

from .base import FinishReason, RequestOutput
from .kv_pool import KVPool
from .paged_attention import BATCH_KWARG, SeqChunk, build_paged_batch
from .sampling import position_seed, sample_next_tokens
from .sequence import Sequence

if TYPE_CHECKING:
    from .decode_linear import DecodeLinears


class BatchRunner:
    """The forward passes and sampling of `TorchEngine` (its state: model, linears, counters)."""

    _model: torch.nn.Module | None
    _linears: DecodeLinears
    _failures: int
    _replay_mismatches: int

    def _retire(self, seq: Sequence, reason: FinishReason) -> None:  # TorchEngine's
        raise NotImplementedError

    def _append_token(self, seq: Sequence, token: int) -> RequestOutput:  # TorchEngine's
        raise NotImplementedError

    def _run(self, group: list[Sequence], pool: KVPool) -> list[RequestOutput]:
        """One forward pass over `group` and its tokens. A failure is isolated: a group
        that fails is run again request by request, and only the request that fails alone
        ends (FinishReason.ERROR); a forward pass writes only its own tokens' KV slots, so
        running it again is harmless."""
        try:
            logits = self._forward(group, pool)
        except Exception as exc:
            if len(group) == 1:
                return [self._fail(group[0], f"forward pass failed: {exc}")]
            return [out for seq in group for out in self._run([seq], pool)]
        outputs = []
        for row, seq in enumerate(group):
            end = _chunk_end(seq)
            try:
                token = self._sample(seq, logits[row], end - seq.num_prompt)
            except Exception as exc:
                outputs.append(self._fail(seq, f"sampling failed: {exc}"))
                continue
            seq.num_cached = end
            if end < seq.num_tokens:
                # Replaying a resumed request token by token: the next token is known.
                if token != seq.token_ids[end]:
                    self._replay_mismatches += 1
                continue
            outputs.append(self._append_token(seq, token))
        return outputs

    def _sample(self, seq: Sequence, logits: torch.Tensor, index: int) -> int:
        """The request's token number `index` (0: the first generated) from its logits."""
        sampling = seq.request.sampling
        if seq.generator is not None and sampling.seed is not None:
            # Draws keyed by (seed, position): a resumed request draws what an uninterrupted
            # run would have drawn at the same position.
            seq.generator.manual_seed(position_seed(sampling.seed, index))
        return sample_next_tokens(logits[None, :], [sampling], [seq.generator])[0]

    def _forward(self, batch: Seq[Sequence], pool: KVPool) -> torch.Tensor:
        """Logits [B, vocab] of each request's last fed token."""
        assert self._model is not None
        chunks = [SeqChunk(pool.table(s.request_id), s.num_cached, _chunk_end(s)) for s in batch]
        input_ids = [
            t for s, c in zip(batch, chunks, strict=True) for t in s.token_ids[c.start : c.end]
        ]
        positions = [p for c in chunks for p in c.positions]
        # The LM head runs on each request's last token only; in a pure decode that is every
        # token of the row (0: keep all, no index op).
        last_index: torch.Tensor | int = 0
        if len(input_ids) != len(batch):
            last_index = torch.cumsum(torch.tensor([c.num_new for c in chunks]), 0) - 1
        paged = build_paged_batch(pool.layers, pool.spec.block_size, chunks)
        self._linears.active = len(input_ids) == len(batch)  # a pure decode
        if isinstance(last_index, torch.Tensor):
            last_index = last_index.to(self.device)
        with torch.inference_mode():
            logits = self._model(
                input_ids=torch.tensor([input_ids], dtype=torch.long, device=self.device),
                position_ids=torch.tensor([positions], dtype=torch.long, device=self.device),
                use_cache=False,
                logits_to_keep=last_index,
                **{BATCH_KWARG: paged},
            ).logits[0]  # [B, vocab]
        if self.device.type != "cpu":  # sampling (per-request CPU generators) on the host
            logits = logits.float().cpu()
        return logits

    def _fail(self, seq: Sequence, reason: str) -> RequestOutput:
        """End one request that the engine failed on; its neighbours go on."""
        self._retire(seq, FinishReason.ERROR)
        self._failures += 1
        return RequestOutput(
            request_id=seq.request_id,
            new_token_ids=(),
            text_delta="",
            finished=True,
            finish_reason=FinishReason.ERROR,
            prompt_tokens=seq.num_prompt,
            completion_tokens=seq.num_completion,
            error=reason,
        )


def _chunk_end(seq: Sequence) -> int:
    """End of the tokens a forward pass feeds for `seq`: all it has not computed, except for
    a deterministic request being recomputed, which runs as it first ran: its prompt in one
    prefill, then each resumed token in a decode of its own (docs/RELIABILITY.md)."""
    if not seq.request.sampling.deterministic:
        return seq.num_tokens
    if seq.num_cached < seq.num_prompt:
        return seq.num_prompt
    return min(seq.num_cached + 1, seq.num_tokens)
