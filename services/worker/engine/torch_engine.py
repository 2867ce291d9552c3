"""The CPU engine: Hugging Face model definitions, continuous batching, a paged KV pool.

One `step()` is one forward pass over the whole batch of this instance: the decode token of
every running request plus the prompts of the waiting requests that fit (scheduler.py),
packed into one row and attended through the paged pool (paged_attention.py). Requests added
between steps join the next one. Design and measurements: docs/ENGINE.md.
"""

from __future__ import annotations

import gc
import itertools
import time
from collections import deque
from collections.abc import Sequence as Seq
from pathlib import Path

import torch

from .base import (
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
from .batch_runner import BatchRunner
from .decode_linear import DecodeLinears
from .detokenizer import TextStream, chat_token_ids
from .kv_pool import KVPool, KVSpec
from .paged_attention import ATTN_IMPLEMENTATION
from .paged_attention import register as register_paged_attention
from .quant_linear import apply_weight_format
from .sampling import make_generator
from .scheduler import Scheduler
from .sequence import SeqStatus, Sequence
from .torch_config import TorchEngineConfig, cuda_dtype, read_cpu_flags, resolve_dtype
from .weight_format import WeightFormat

BATCH_SIZE_HISTORY = 1024  # recent per-iteration batch sizes kept for stats()


class TorchEngine(BatchRunner):
    kind = EngineKind.TORCH

    def __init__(self, config: TorchEngineConfig) -> None:
        from transformers import AutoConfig, AutoTokenizer

        self.config = config
        self.model_dir = Path(config.model_dir)
        self.hf_config = AutoConfig.from_pretrained(self.model_dir, local_files_only=True)
        _check_supported(self.hf_config)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        self.device = torch.device(config.device)
        self.dtype = (
            resolve_dtype(config.dtype, read_cpu_flags())
            if self.device.type == "cpu"
            else cuda_dtype(config.dtype)
        )
        # The projections' storage: as configured, else the activation dtype's.
        self.weights = config.weights or (
            WeightFormat.BF16 if self.dtype == torch.bfloat16 else WeightFormat.FP32
        )
        self.kv_spec = _kv_spec(self.hf_config, self.dtype, config.block_size)
        self.max_model_len: int = self.hf_config.max_position_embeddings
        self.vocab_size: int = self.hf_config.vocab_size
        self.eos_token_ids = _eos_token_ids(self.model_dir, self.hf_config, self.tokenizer)
        self._kv_capacity_tokens = config.kv_capacity_tokens  # applied at load and resize
        self._kv_pressure_events = 0
        self._scheduler = Scheduler(
            config.max_batched_tokens, config.max_batch_size, elastic=config.kv_elastic
        )
        self._model: torch.nn.Module | None = None
        self._linears = DecodeLinears()
        self._pool: KVPool | None = None
        self._weights_bytes = 0
        self._arrivals = itertools.count()
        self._iterations = 0
        self._batch_sizes: deque[int] = deque(maxlen=BATCH_SIZE_HISTORY)
        self._failures = 0  # requests ended with FinishReason.ERROR
        # Deterministic replays whose recomputed token differed from the one resumed: the
        # numerics differ from the dispatch that produced them (another hardware label).
        self._replay_mismatches = 0
        self.load()

    # ---- requests -------------------------------------------------------------------------

    def encode(self, prompt: str) -> list[int]:
        return list(self.tokenizer.encode(prompt))

    def encode_chat(self, messages: Seq[dict[str, str]]) -> list[int]:
        return chat_token_ids(self.tokenizer, messages)

    def add_request(self, request: EngineRequest) -> None:
        self._validate(request)
        pool = self._require_pool()
        context = [*request.prompt_token_ids, *request.resumed_token_ids]
        # +1: the first decode after the prefill must find a slot too.
        if not pool.reserve(request.request_id, len(context) + 1):
            raise KVCapacityExceeded(
                f"request {request.request_id} needs {len(context) + 1} KV slots; "
                f"{pool.free_blocks * pool.spec.block_size} of {pool.capacity_tokens} are free"
            )
        sampling = request.sampling
        self._scheduler.add(
            Sequence(
                request=request,
                arrival=next(self._arrivals),
                token_ids=context,
                # Text of resumed tokens was streamed by the earlier dispatch: replayed, not sent.
                text=TextStream.resumed(
                    self.tokenizer,
                    request.prompt_token_ids,
                    request.resumed_token_ids,
                    sampling.stop,
                ),
                generator=make_generator(sampling.seed) if sampling.temperature > 0 else None,
            )
        )

    def abort_request(self, request_id: str) -> RequestOutput | None:
        seq = self._find(request_id)
        if seq is None:
            return None
        self._retire(seq, FinishReason.ABORT)
        return RequestOutput(
            request_id=request_id,
            new_token_ids=(),
            text_delta="",
            finished=True,
            finish_reason=FinishReason.ABORT,
            prompt_tokens=seq.num_prompt,
            completion_tokens=seq.num_completion,
        )

    def has_work(self) -> bool:
        return bool(self._scheduler.all())

    # ---- iterations -----------------------------------------------------------------------

    def step(self) -> IterationResult:
        pool = self._require_pool()
        started = time.perf_counter()
        self._apply_threads()
        plan = self._scheduler.schedule(pool)
        outputs = [self._truncate(seq) for seq in plan.truncated]
        self._kv_pressure_events += len(plan.preempted) + len(plan.truncated)
        if plan.is_empty:
            return IterationResult(Phase.IDLE, 0, 0, time.perf_counter() - started, tuple(outputs))
        batch = plan.scheduled
        # Deterministic requests run alone (batch invariance, docs/RELIABILITY.md); the
        # others share one packed forward pass.
        shared = [s for s in batch if not s.request.sampling.deterministic]
        groups = ([shared] if shared else []) + [
            [s] for s in batch if s.request.sampling.deterministic
        ]
        for group in groups:
            outputs += self._run(group, pool)
        self._iterations += 1
        self._batch_sizes.append(len(batch))
        return IterationResult(
            phase=Phase.PREFILL if plan.prefills else Phase.DECODE,
            batch_size=len(batch),
            context_tokens=sum(seq.num_cached for seq in batch),
            duration_s=time.perf_counter() - started,
            outputs=tuple(outputs),
        )

    def _append_token(self, seq: Sequence, token: int) -> RequestOutput:
        seq.token_ids.append(token)
        reason: FinishReason | None = None
        if token in self.eos_token_ids and not seq.request.sampling.ignore_eos:
            reason = FinishReason.STOP
            delta = seq.text.finish()  # the EOS token itself has no text
        else:
            delta, stopped = seq.text.push(token)
            if stopped:
                reason = FinishReason.STOP
            elif seq.num_completion >= seq.request.sampling.max_tokens:
                reason = FinishReason.LENGTH
                delta += seq.text.finish()
        if reason is not None:
            self._retire(seq, reason)
        return RequestOutput(
            request_id=seq.request_id,
            new_token_ids=(token,),
            text_delta=delta,
            finished=reason is not None,
            finish_reason=reason,
            prompt_tokens=seq.num_prompt,
            completion_tokens=seq.num_completion,
        )

    def _truncate(self, seq: Sequence) -> RequestOutput:
        """The request cannot fit the whole pool (it shrank, or the request outgrew it)."""
        self._retire(seq, FinishReason.LENGTH)
        return RequestOutput(
            request_id=seq.request_id,
            new_token_ids=(),
            text_delta=seq.text.finish(),
            finished=True,
            finish_reason=FinishReason.LENGTH,
            prompt_tokens=seq.num_prompt,
            completion_tokens=seq.num_completion,
        )

    def _retire(self, seq: Sequence, reason: FinishReason) -> None:
        self._scheduler.remove(seq)
        if self._pool is not None:
            self._pool.release(seq.request_id)
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = reason

    # ---- memory ---------------------------------------------------------------------------

    def stats(self) -> EngineStats:
        pool = self._pool
        seqs = self._scheduler.all()
        return EngineStats(
            loaded=self._model is not None,
            running=len(self._scheduler.running),
            waiting=len(self._scheduler.waiting),
            kv_capacity_tokens=pool.capacity_tokens if pool is not None else 0,
            # Context tokens of the requests holding blocks (a prefill pending included).
            kv_used_tokens=sum(s.num_tokens for s in seqs if pool and pool.holds(s.request_id)),
            kv_bytes_allocated=pool.bytes_allocated if pool is not None else 0,
            kv_bytes_per_token=self.kv_spec.kv_bytes_per_token,
            kv_resizable=True,
            weights_bytes=self._weights_bytes,
            max_model_len=self.max_model_len,
            iterations=self._iterations,
            batch_sizes=tuple(self._batch_sizes),
            kv_pressure_events=self._kv_pressure_events,
        )

    def resize_kv(self, capacity_tokens: int) -> int:
        if capacity_tokens < 0:
            raise ValueError(f"capacity_tokens must be >= 0, got {capacity_tokens}")
        if self._pool is None:  # offloaded: applies at the next load()
            self._kv_capacity_tokens = capacity_tokens
            return 0
        allocated = self._pool.resize(capacity_tokens // self.kv_spec.block_size)
        self._kv_capacity_tokens = capacity_tokens
        return allocated

    def offload(self) -> None:
        if self._scheduler.all():
            raise EngineError(
                f"offload with {len(self._scheduler.all())} requests in flight; abort them first"
            )
        self._model = None
        self._pool = None
        self._weights_bytes = 0
        gc.collect()

    def load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForCausalLM

        self._apply_threads()
        register_paged_attention()
        model = AutoModelForCausalLM.from_pretrained(
            self.model_dir,
            dtype=self.dtype,
            attn_implementation=ATTN_IMPLEMENTATION,
            local_files_only=True,
        )
        model.eval()
        if self.device.type != "cpu":
            model.to(self.device)
        if self.config.weights is not None:
            apply_weight_format(model, self.config.weights, self.dtype)
        self._linears = DecodeLinears().install(model)
        tensors = itertools.chain(model.parameters(), model.buffers())
        self._weights_bytes = sum(t.numel() * t.element_size() for t in tensors)
        self._pool = KVPool(
            self.kv_spec,
            self._kv_capacity_tokens // self.kv_spec.block_size,
            device=str(self.device),
        )
        self._model = model

    def close(self) -> None:
        for seq in self._scheduler.all():
            self._retire(seq, FinishReason.ABORT)
        self.offload()

    # ---- helpers --------------------------------------------------------------------------

    def _validate(self, request: EngineRequest) -> None:
        if self._find(request.request_id) is not None:
            raise InvalidRequest(f"request id {request.request_id} is already in this instance")
        check_request(request, self.vocab_size, self.max_model_len)

    def _require_pool(self) -> KVPool:
        if self._pool is None:
            raise NotLoaded(f"{self.model_dir.name} is offloaded; load() first")
        return self._pool

    def _find(self, request_id: str) -> Sequence | None:
        return next((s for s in self._scheduler.all() if s.request_id == request_id), None)

    def _apply_threads(self) -> None:
        # Threads are a per-process torch setting: applied each time this instance runs, so
        # co-located instances each get their own while they hold the device.
        wanted = self.config.num_threads
        if wanted is not None and torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)


def _check_supported(hf_config) -> None:
    if getattr(hf_config, "use_sliding_window", False) or "sliding_attention" in (
        getattr(hf_config, "layer_types", None) or ()
    ):
        raise ValueError("sliding-window attention is not supported by the CPU engine")


def _kv_spec(hf_config, dtype: torch.dtype, block_size: int) -> KVSpec:
    heads = hf_config.num_attention_heads
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
    return KVSpec(
        num_layers=hf_config.num_hidden_layers,
        num_kv_heads=getattr(hf_config, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        dtype=dtype,
        block_size=block_size,
    )


def _eos_token_ids(model_dir: Path, hf_config, tokenizer) -> frozenset[int]:
    """EOS ids from generation_config.json (as `generate` uses), the config and tokenizer."""
    from transformers import GenerationConfig

    ids: set[int] = set()
    sources = [hf_config.eos_token_id, tokenizer.eos_token_id]
    if (model_dir / "generation_config.json").is_file():
        sources.append(GenerationConfig.from_pretrained(model_dir).eos_token_id)
    for source in sources:
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(source)
    return frozenset(ids)
