"""The vLLM engine: one vLLM `LLMEngine`, stepped in-process one iteration per `step()`.

How the Engine interface maps onto vLLM 0.32 (details and measurements in docs/VLLM.md):

- `step()` is one `LLMEngine.step()` = one scheduler pass + one forward pass (no async
  scheduling, no batch queue), so the arbiter grants every iteration.
- KV capacity is vLLM's `kv_cache_memory_bytes`, sized so the block pool holds at least
  `kv_capacity_tokens`; capacity and use are read back from the scheduler's block pool.
- Offload: on CUDA, sleep mode level 1 (weights to host, KV dropped) and `wake_up()`; on CPU,
  sleep mode does not exist, so the engine is shut down and rebuilt by `load()`.
- Elastic KV needs kvcached (CUDA only); otherwise the pool is fixed and `resize_kv` raises
  KVNotResizable.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from slinfer.services.worker.engine import vllm_gpu, vllm_process
from slinfer.services.worker.engine.base import (
    EngineError,
    EngineKind,
    EngineRequest,
    EngineStats,
    FinishReason,
    InvalidRequest,
    IterationResult,
    KVCapacityExceeded,
    KVNotResizable,
    NotLoaded,
    Phase,
    RequestOutput,
)
from slinfer.services.worker.engine.vllm_config import (
    ModelShape,
    VllmOptions,
    kv_request_bytes,
    resolve_dtype,
    validate_sampling,
)
from slinfer.services.worker.engine.vllm_probe import BatchProbe, PoolInfo, read_pool, used_tokens
from slinfer.services.worker.engine.vllm_text import TrackedRequest

_FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "abort": FinishReason.ABORT,
}
_RECENT_BATCHES = 64  # batch sizes kept for stats()


@dataclass(slots=True)
class _Counters:
    iterations: int = 0
    batch_sizes: deque[int] = field(default_factory=lambda: deque(maxlen=_RECENT_BATCHES))


class VllmEngine:
    """One model instance on vLLM. Synchronous; called from one thread (base.Engine)."""

    kind = EngineKind.VLLM

    def __init__(
        self,
        model_path: Path | str,
        *,
        kv_capacity_tokens: int,
        device: str = "cpu",
        num_threads: int | None = None,
        options: VllmOptions | None = None,
    ) -> None:
        self._options = options or VllmOptions()
        self._options.validate()
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if kv_capacity_tokens <= 0:
            raise ValueError(f"kv_capacity_tokens must be > 0, got {kv_capacity_tokens}")
        if num_threads is not None and num_threads <= 0:
            raise ValueError(f"num_threads must be > 0, got {num_threads}")
        self.model_path = Path(model_path)
        self.device = device
        self._num_threads = num_threads
        self._shape = ModelShape.read(self.model_path)
        self.dtype = resolve_dtype(self._options.dtype, device)  # also the perf-table key's
        self._block_size = self._options.block_size or (32 if device == "cpu" else 16)
        if device == "cpu":
            self._shape.check_cpu_attention()
        self._kvcached = vllm_gpu.kvcached_enabled(device)
        self._requested_capacity = kv_capacity_tokens
        self._max_model_len = min(
            self._options.max_model_len or self._shape.max_position_embeddings,
            self._shape.max_position_embeddings,
            kv_capacity_tokens,
        )
        self._llm: Any = None  # vllm LLMEngine while loaded (CPU) or created (CUDA)
        self._asleep = False
        self._closed = False
        self._owned_ptrs: set[int] = set()
        self._tokenizer: Any = None
        self._requests: dict[str, TrackedRequest] = {}
        self._counters = _Counters()
        self._probe = BatchProbe()
        self._pool = PoolInfo()
        self._kv_limit_tokens: int | None = None  # kvcached limit, when elastic
        self.startup_s = 0.0
        self._start()

    # --- lifecycle --------------------------------------------------------------------------

    def _start(self) -> None:
        vllm_process.prepare_environment()
        from vllm import EngineArgs

        capacity = self._kv_limit_tokens or self._requested_capacity
        virtual = capacity * (self._options.kvcached_virtual_factor if self._kvcached else 1)
        kv_bytes = kv_request_bytes(
            virtual, self._block_size, self._shape.kv_bytes_per_token(self.dtype)
        )
        args = EngineArgs(
            model=str(self.model_path),
            dtype=self.dtype,
            block_size=self._block_size,
            kv_cache_memory_bytes=kv_bytes,
            max_model_len=self._max_model_len,
            max_num_seqs=self._options.max_num_seqs,
            enforce_eager=self._options.enforce_eager,
            enable_prefix_caching=self._options.enable_prefix_caching,
            seed=self._options.seed,
            # HF generation_config.json would add defaults (top_k, repetition penalty) to
            # every request; our SamplingParams map one to one instead.
            generation_config="vllm",
            disable_log_stats=True,
            **(
                vllm_gpu.cuda_engine_args(kv_bytes, self._shape.weights_file_bytes)
                if self.device == "cuda"
                else {}
            ),
        )
        t0 = time.perf_counter()
        self._llm, self._owned_ptrs = vllm_process.start_engine(
            args, self.device, self._num_threads
        )
        self.startup_s = time.perf_counter() - t0
        self._probe.attach(self._scheduler())
        if self._tokenizer is None:
            self._tokenizer = self._llm.get_tokenizer()
        self._pool = read_pool(self._llm, self._block_size)
        if self._kvcached:
            self._kv_limit_tokens = capacity
            vllm_gpu.set_kvcached_limit(id(self), capacity * self._pool.kv_bytes_per_token)
        logger.info(
            "vllm engine started model={} device={} dtype={} kv_capacity_tokens={} start_s={:.2f}",
            self.model_path.name,
            self.device,
            self.dtype,
            self._pool.capacity_tokens,
            self.startup_s,
        )

    def _release(self) -> None:
        if self._llm is None:
            return
        llm, self._llm = self._llm, None
        self._probe.detach()
        with vllm_process.released_engine():
            llm.engine_core.shutdown()
            del llm

    def offload(self) -> None:
        if self._requests:
            raise EngineError(
                f"offload with {len(self._requests)} requests in flight; abort them first"
            )
        if self._llm is None or self._asleep:
            return
        if self.device == "cuda":
            with vllm_gpu.own_allocations(self._owned_ptrs):
                self._llm.sleep(level=1)
            self._asleep = True
        else:
            self._release()

    def load(self) -> None:
        if self._closed:
            raise EngineError("engine is closed")
        if self._llm is None:
            self._start()
        elif self._asleep:
            with vllm_gpu.own_allocations(self._owned_ptrs):
                self._llm.wake_up()
            self._asleep = False

    def close(self) -> None:
        self._requests.clear()
        self._release()
        if self._kvcached:
            vllm_gpu.set_kvcached_limit(id(self), None)
        self._asleep = False
        self._closed = True

    # --- requests ---------------------------------------------------------------------------

    def encode(self, prompt: str) -> list[int]:
        return list(self._tokenizer.encode(prompt))

    def add_request(self, request: EngineRequest) -> None:
        self._require_loaded()
        validate_sampling(request.sampling)
        if request.request_id in self._requests:
            raise InvalidRequest(f"request id {request.request_id!r} is already in this engine")
        tokens = list(request.prompt_token_ids) + list(request.resumed_token_ids)
        if not request.prompt_token_ids:
            raise InvalidRequest("the prompt is empty")
        if any(not 0 <= t < self._shape.vocab_size for t in tokens):
            raise InvalidRequest(f"token ids must be in [0, {self._shape.vocab_size})")
        remaining = request.sampling.max_tokens - len(request.resumed_token_ids)
        if remaining <= 0:
            raise InvalidRequest("resumed_token_ids already reach max_tokens")
        if len(tokens) >= self._max_model_len:
            raise InvalidRequest(
                f"{len(tokens)} prompt tokens leave no room in this instance's context "
                f"of {self._max_model_len} tokens"
            )
        self._admit_kv(len(tokens))
        from vllm import SamplingParams as VllmSamplingParams
        from vllm.exceptions import VLLMClientError
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        sampling = request.sampling
        params = VllmSamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=remaining,
            # A resumed request's stop strings are matched by its own text stream (vllm_text.py).
            stop=(list(sampling.stop) or None) if not request.resumed_token_ids else None,
            seed=sampling.seed,
            ignore_eos=sampling.ignore_eos,
            output_kind=RequestOutputKind.DELTA,
        )
        try:
            self._llm.add_request(request.request_id, TokensPrompt(prompt_token_ids=tokens), params)
        except (VLLMClientError, ValueError, TypeError) as exc:
            raise InvalidRequest(f"vLLM refused the request: {exc}") from exc
        self._requests[request.request_id] = TrackedRequest.start(
            self._tokenizer,
            request.prompt_token_ids,
            request.resumed_token_ids,
            sampling.stop,
        )

    def _admit_kv(self, num_tokens: int) -> None:
        """Refuse a prompt whose prefill blocks are not free now (after queued prefills)."""
        scheduler = self._scheduler()
        free = scheduler.kv_cache_manager.block_pool.get_num_free_blocks()
        queued = sum(_blocks(r.num_tokens + 1, self._block_size) for r in scheduler.waiting)
        needed = _blocks(num_tokens + 1, self._block_size)
        if needed > free - queued:
            raise KVCapacityExceeded(
                f"prompt needs {needed} KV blocks of {self._block_size} tokens; "
                f"{max(0, free - queued)} free after queued prefills"
            )

    def abort_request(self, request_id: str) -> RequestOutput | None:
        tracked = self._requests.pop(request_id, None)
        if tracked is None:
            return None
        if self._llm is not None:
            self._llm.abort_request([request_id])
        return RequestOutput(
            request_id=request_id,
            new_token_ids=(),
            text_delta="",
            finished=True,
            finish_reason=FinishReason.ABORT,
            prompt_tokens=tracked.prompt_tokens,
            completion_tokens=tracked.resumed_tokens + tracked.generated,
        )

    def has_work(self) -> bool:
        return bool(self._requests)

    # --- iteration --------------------------------------------------------------------------

    def step(self) -> IterationResult:
        self._require_loaded()
        if not self._requests:
            return IterationResult(phase=Phase.IDLE, batch_size=0, context_tokens=0, duration_s=0)
        vllm_process.set_threads(self._num_threads)
        self._probe.reset()
        t0 = time.perf_counter()
        vllm_outputs = self._llm.step()
        duration = time.perf_counter() - t0
        outputs = tuple(self._convert(o) for o in vllm_outputs)
        batch = self._probe.batch
        if batch.size:
            self._counters.iterations += 1
            self._counters.batch_sizes.append(batch.size)
        phase = Phase.PREFILL if batch.prefill else Phase.DECODE if batch.size else Phase.IDLE
        return IterationResult(
            phase=phase,
            batch_size=batch.size,
            context_tokens=batch.context_tokens,
            duration_s=duration,
            outputs=outputs,
        )

    def _convert(self, output: Any) -> RequestOutput:
        completion = output.outputs[0]
        request_id = output.request_id
        tracked = self._requests[request_id]
        text, used, stopped = tracked.text(completion, output.finished, self._tokenizer)
        finished = output.finished or stopped
        reason = _FINISH_REASONS.get(completion.finish_reason) if output.finished else None
        if stopped:  # a stop string vLLM was not asked to match
            reason = FinishReason.STOP
            if not output.finished:
                self._llm.abort_request([request_id])
        if finished:
            del self._requests[request_id]
        return RequestOutput(
            request_id=request_id,
            new_token_ids=tuple(completion.token_ids)[:used],
            text_delta=text,
            finished=finished,
            finish_reason=reason,
            prompt_tokens=tracked.prompt_tokens,
            completion_tokens=tracked.resumed_tokens + tracked.generated,
        )

    # --- memory -----------------------------------------------------------------------------

    def stats(self) -> EngineStats:
        loaded = self._llm is not None and not self._asleep
        running = waiting = used = 0
        if loaded:
            scheduler = self._scheduler()
            running, waiting = scheduler.get_request_counts()
            used = used_tokens(scheduler, self._block_size)
        # Offloaded: nothing of this instance is resident on the device (as TorchEngine).
        return EngineStats(
            loaded=loaded,
            running=running,
            waiting=waiting,
            kv_capacity_tokens=(self._kv_limit_tokens or self._pool.capacity_tokens)
            if loaded
            else 0,
            kv_used_tokens=used,
            kv_bytes_allocated=self._pool.kv_bytes_allocated if loaded else 0,
            kv_bytes_per_token=self._pool.kv_bytes_per_token,
            kv_resizable=self._kvcached,
            weights_bytes=self._pool.weights_bytes if loaded else 0,
            max_model_len=self._max_model_len,
            iterations=self._counters.iterations,
            batch_sizes=tuple(self._counters.batch_sizes),
        )

    def resize_kv(self, capacity_tokens: int) -> int:
        if not self._kvcached:
            raise KVNotResizable(
                "vLLM's KV pool is fixed at start here (elastic KV needs kvcached on CUDA)"
            )
        self._require_loaded()
        # kvcached path (CUDA, untested on this machine): the limit caps physical pages;
        # vLLM's virtual pool was reserved kvcached_virtual_factor x larger at start.
        virtual = self._pool.capacity_tokens
        if capacity_tokens > virtual:
            raise KVCapacityExceeded(
                f"{capacity_tokens} tokens exceed the {virtual} reserved at start"
            )
        if capacity_tokens < self.stats().kv_used_tokens:
            raise KVCapacityExceeded(f"live requests use more than {capacity_tokens} tokens")
        self._kv_limit_tokens = capacity_tokens
        limit_bytes = capacity_tokens * self._pool.kv_bytes_per_token
        vllm_gpu.set_kvcached_limit(id(self), limit_bytes)
        return limit_bytes

    def _capacity_tokens(self) -> int:
        return self._kv_limit_tokens or self._pool.capacity_tokens

    def _scheduler(self) -> Any:
        return self._llm.engine_core.engine_core.scheduler

    def _require_loaded(self) -> None:
        if self._closed:
            raise EngineError("engine is closed")
        if self._llm is None or self._asleep:
            raise NotLoaded(f"{self.model_path.name} is offloaded; load() first")


def _blocks(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)
