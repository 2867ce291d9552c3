"""The OpenVINO engine: one GenAI ContinuousBatchingPipeline per instance, one step() per grant.

How the Engine interface maps onto OpenVINO GenAI (design and measurements: docs/OPENVINO.md):

- `step()` is one `ContinuousBatchingPipeline.step()`: one scheduler pass and one forward pass
  over every running request (decodes plus prompt chunks up to `max_batched_tokens`), so the
  arbiter grants every iteration. Nothing runs between steps: the pipeline has no thread of
  its own that generates.
- Requests enter as token ids (`add_request(id, ids, GenerationConfig)`); tokenisation,
  detokenisation, stop strings and EOS are slinfer's (`detokenizer.py`), exactly as in the
  PyTorch engine, and the pipeline is told `ignore_eos` and the remaining `max_new_tokens`. A
  request slinfer finishes (EOS, stop string) is cancelled in the pipeline before the next
  step, so no token past the end is ever computed.
- KV: a fixed pool of `kv_capacity_tokens // 32` blocks (`SchedulerConfig.num_kv_blocks`).
  The pipeline cannot resize it in place (its dynamic mode grows by copying, without limit,
  and never shrinks); `resize_kv` rebuilds the pipeline with the new pool between iterations
  and re-adds the requests in flight with their tokens so far (ov_pipeline.py).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Sequence as Seq
from pathlib import Path

import torch

from slinfer.services.worker.engine.base import (
    EngineError,
    EngineKind,
    EngineRequest,
    EngineStats,
    FinishReason,
    InvalidRequest,
    IterationResult,
    KVCapacityExceeded,
    NotLoaded,
    Phase,
    RequestOutput,
    check_request,
)
from slinfer.services.worker.engine.detokenizer import TextStream, chat_token_ids
from slinfer.services.worker.engine.ov_config import CPU_BLOCK_SIZE, OpenVinoEngineConfig
from slinfer.services.worker.engine.ov_graph import MAX_ROPE_POSITIONS
from slinfer.services.worker.engine.ov_pipeline import OvPipeline
from slinfer.services.worker.engine.ov_requests import OvSequence, OvStatus, blocks, plan_kv

BATCH_SIZE_HISTORY = 1024


class OpenVinoEngine:
    kind = EngineKind.OPENVINO

    def __init__(self, config: OpenVinoEngineConfig) -> None:
        from transformers import AutoConfig, AutoTokenizer

        from slinfer.services.worker.engine.torch_engine import _eos_token_ids

        self.config = config
        self.model_dir = Path(config.model_dir)
        hf_config = AutoConfig.from_pretrained(self.model_dir, local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        self.eos_token_ids = _eos_token_ids(self.model_dir, hf_config, self.tokenizer)
        self.vocab_size: int = hf_config.vocab_size
        self.max_model_len: int = min(hf_config.max_position_embeddings, MAX_ROPE_POSITIONS)
        self.weights = config.weights
        # The activation dtype, as the PyTorch engine names it (and the perf-table key reads).
        self.dtype = torch.bfloat16 if config.precision == "bf16" else torch.float32
        self.block_size = CPU_BLOCK_SIZE
        self._pipeline = OvPipeline(config)
        self._seqs: dict[str, OvSequence] = {}
        self._arrivals = itertools.count()
        self._ids = itertools.count(1)
        self._iterations = 0
        self._batch_sizes: deque[int] = deque(maxlen=BATCH_SIZE_HISTORY)
        self._kv_pressure_events = 0
        self.load()

    # ---- requests -------------------------------------------------------------------------

    def encode(self, prompt: str) -> list[int]:
        return list(self.tokenizer.encode(prompt))

    def encode_chat(self, messages: Seq[dict[str, str]]) -> list[int]:
        return chat_token_ids(self.tokenizer, messages)

    def add_request(self, request: EngineRequest) -> None:
        self._validate(request)
        if not self._pipeline.loaded:
            raise NotLoaded(f"{self.model_dir.name} is offloaded; load() first")
        context = [*request.prompt_token_ids, *request.resumed_token_ids]
        # +1: the first decode must find a slot too (as in the PyTorch engine).
        need = blocks(len(context) + 1, self.block_size)
        free = self._capacity_blocks - self._blocks_held()
        if need > free:
            raise KVCapacityExceeded(
                f"request {request.request_id} needs {len(context) + 1} KV slots; "
                f"{free * self.block_size} of {self.kv_capacity_tokens} are free"
            )
        self._seqs[request.request_id] = OvSequence(
            request=request,
            arrival=next(self._arrivals),
            token_ids=context,
            text=TextStream(self.tokenizer, context, request.sampling.stop),
        )

    def abort_request(self, request_id: str) -> RequestOutput | None:
        seq = self._seqs.get(request_id)
        if seq is None:
            return None
        self._retire(seq, FinishReason.ABORT)
        return self._output(seq, (), "")

    def has_work(self) -> bool:
        return bool(self._seqs)

    # ---- iterations -----------------------------------------------------------------------

    def step(self) -> IterationResult:
        if not self._pipeline.loaded:
            raise NotLoaded(f"{self.model_dir.name} is offloaded; load() first")
        started = time.perf_counter()
        if not self._pipeline.ready:  # a KV resize is rebuilding the pipeline
            return IterationResult(Phase.IDLE, 0, 0, time.perf_counter() - started)
        outputs = self._schedule()
        running = [s for s in self._seqs.values() if s.status is OvStatus.RUNNING]
        if not running:
            return IterationResult(Phase.IDLE, 0, 0, time.perf_counter() - started, tuple(outputs))
        prefill = any(s.fed == 0 for s in running)  # a prompt (or a chunk of one) runs
        scheduled = self._pipeline.step()
        for seq in running:
            new = self._pipeline.read(seq)
            if new:
                seq.fed = 1
                outputs.extend(self._emit(seq, new))
        self._iterations += 1
        self._batch_sizes.append(scheduled)
        return IterationResult(
            phase=Phase.PREFILL if prefill else Phase.DECODE,
            batch_size=scheduled,
            context_tokens=sum(s.num_tokens for s in running),
            duration_s=time.perf_counter() - started,
            outputs=tuple(outputs),
        )

    def _schedule(self) -> list[RequestOutput]:
        """Keep the pipeline inside its pool (ov_requests.plan_kv); add what fits."""
        running = [s for s in self._seqs.values() if s.status is OvStatus.RUNNING]
        waiting = [s for s in self._seqs.values() if s.status is OvStatus.WAITING]
        plan = plan_kv(
            running, waiting, self._capacity_blocks, self.block_size, self.config.max_batch_size
        )
        outputs = []
        for seq in plan.truncate:
            outputs.append(self._finish(seq, FinishReason.LENGTH, seq.text.finish()))
        for seq in plan.preempt:
            self._pipeline.cancel(seq)
            seq.status = OvStatus.WAITING
            seq.seed_offset += 1
        self._kv_pressure_events += len(plan.preempt) + len(plan.truncate)
        for seq in plan.admit:
            self._pipeline.add(seq, next(self._ids))
            seq.fed = 0
            seq.status = OvStatus.RUNNING
        return outputs

    def _emit(self, seq: OvSequence, new: list[int]) -> list[RequestOutput]:
        outputs = []
        for token in new:
            seq.token_ids.append(token)
            sampling = seq.request.sampling
            if token in self.eos_token_ids and not sampling.ignore_eos:
                outputs.append(self._finish(seq, FinishReason.STOP, seq.text.finish(), (token,)))
                break
            delta, stopped = seq.text.push(token)
            if stopped:
                outputs.append(self._finish(seq, FinishReason.STOP, delta, (token,)))
                break
            if seq.num_completion >= sampling.max_tokens:
                delta += seq.text.finish()
                outputs.append(self._finish(seq, FinishReason.LENGTH, delta, (token,)))
                break
            outputs.append(self._output(seq, (token,), delta))
        return outputs

    def _finish(
        self, seq: OvSequence, reason: FinishReason, delta: str, new: tuple[int, ...] = ()
    ) -> RequestOutput:
        self._retire(seq, reason)
        return self._output(seq, new, delta)

    def _output(self, seq: OvSequence, new: tuple[int, ...], delta: str) -> RequestOutput:
        return RequestOutput(
            request_id=seq.request_id,
            new_token_ids=new,
            text_delta=delta,
            finished=seq.status is OvStatus.FINISHED,
            finish_reason=seq.finish_reason,
            prompt_tokens=seq.num_prompt,
            completion_tokens=seq.num_completion,
        )

    def _retire(self, seq: OvSequence, reason: FinishReason) -> None:
        if seq.status is OvStatus.RUNNING:
            self._pipeline.cancel(seq)
        seq.status = OvStatus.FINISHED
        seq.finish_reason = reason
        self._seqs.pop(seq.request_id, None)

    # ---- memory ---------------------------------------------------------------------------

    @property
    def _capacity_blocks(self) -> int:
        return self._pipeline.kv_blocks

    @property
    def kv_capacity_tokens(self) -> int:
        return self._capacity_blocks * self.block_size

    def _blocks_held(self) -> int:
        # Every admitted request counts, waiting ones included: their prefill is promised.
        return sum(blocks(s.num_tokens + 1, self.block_size) for s in self._seqs.values())

    def stats(self) -> EngineStats:
        p = self._pipeline
        return EngineStats(
            loaded=p.loaded,
            running=sum(1 for s in self._seqs.values() if s.status is OvStatus.RUNNING),
            waiting=sum(
                1 for s in self._seqs.values() if s.status is OvStatus.WAITING or s.fed == 0
            ),
            kv_capacity_tokens=self.kv_capacity_tokens if p.loaded else 0,
            kv_used_tokens=sum(s.num_tokens for s in self._seqs.values()),
            kv_bytes_allocated=p.kv_bytes_allocated,
            kv_bytes_per_token=p.kv_bytes_per_token,
            kv_resizable=True,
            weights_bytes=p.weights_bytes,
            max_model_len=self.max_model_len,
            iterations=self._iterations,
            batch_sizes=tuple(self._batch_sizes),
            kv_pressure_events=self._kv_pressure_events,
        )

    def resize_kv(self, capacity_tokens: int) -> int:
        """Rebuild the pipeline with a pool of `capacity_tokens` (whole blocks), between
        iterations: the old one is released now, the new one builds in the background
        (ov_pipeline.py); requests in flight continue from their tokens so far (recompute)
        once it is ready. Returns the bytes the new pool allocates."""
        if capacity_tokens < 0:
            raise ValueError(f"capacity_tokens must be >= 0, got {capacity_tokens}")
        new_blocks = capacity_tokens // self.block_size
        held = sum(blocks(s.num_tokens + 1, self.block_size) for s in self._seqs.values())
        if held > new_blocks:
            raise KVCapacityExceeded(
                f"{held * self.block_size} KV slots are held by live requests; cannot shrink "
                f"to {new_blocks * self.block_size}"
            )
        if new_blocks == self._pipeline.kv_blocks and self._pipeline.loaded:
            return self._pipeline.kv_bytes_allocated
        for seq in self._seqs.values():
            if seq.status is OvStatus.RUNNING:
                self._pipeline.cancel(seq)
                seq.status = OvStatus.WAITING
                seq.fed = 0
        self._pipeline.start_rebuild(new_blocks)
        return self._pipeline.kv_bytes_allocated

    @property
    def resize_s(self) -> float:
        """Time spent rebuilding for resizes (this instance's requests waited meanwhile)."""
        return self._pipeline.rebuild_s

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        return self._pipeline.wait(timeout_s)

    @property
    def resizes(self) -> int:
        return self._pipeline.rebuilds

    @property
    def load_s(self) -> float:
        return self._pipeline.build_s

    def offload(self) -> None:
        if self._seqs:
            raise EngineError(
                f"offload with {len(self._seqs)} requests in flight; abort them first"
            )
        self._pipeline.release()

    def load(self) -> None:
        self._pipeline.build()

    def close(self) -> None:
        for seq in list(self._seqs.values()):
            self._retire(seq, FinishReason.ABORT)
        self._pipeline.release()

    # ---- helpers --------------------------------------------------------------------------

    def _validate(self, request: EngineRequest) -> None:
        if request.sampling.deterministic:
            raise InvalidRequest(
                "deterministic decoding is offered by the torch engine only (the OpenVINO "
                "pipeline batches and recomputes in its own order); deploy the model with "
                "engine torch, or drop `deterministic`"
            )
        if request.request_id in self._seqs:
            raise InvalidRequest(f"request id {request.request_id} is already in this instance")
        check_request(request, self.vocab_size, self.max_model_len)
