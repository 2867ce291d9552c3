"""The engine interface every worker instance runs behind (DESIGN.md §5).

An engine owns one model instance: its weights, its KV pool and the requests admitted to it.
The worker (and later its arbiter) decides *when* an engine runs; the engine only decides what
one iteration does. Engines are synchronous and not thread-safe: the worker calls them from one
executor thread per device, never concurrently.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from slinfer.services.common.engine_types import (
    EngineError,
    EngineKind,
    FinishReason,
    InvalidRequest,
    KVCapacityExceeded,
    KVNotResizable,
    NotLoaded,
    SamplingParams,
)

__all__ = [
    "Engine",
    "EngineError",
    "EngineKind",
    "EngineRequest",
    "EngineStats",
    "FinishReason",
    "InvalidRequest",
    "IterationResult",
    "KVCapacityExceeded",
    "KVNotResizable",
    "NotLoaded",
    "Phase",
    "RequestOutput",
    "SamplingParams",
]


class Phase(enum.Enum):
    IDLE = "idle"
    PREFILL = "prefill"
    DECODE = "decode"


@dataclass(frozen=True, slots=True)
class EngineRequest:
    request_id: str
    prompt_token_ids: tuple[int, ...]
    sampling: SamplingParams
    # Tokens already generated before a preemption; the engine recomputes their KV together
    # with the prompt and continues from there (recompute-based migration, DESIGN.md §1).
    resumed_token_ids: tuple[int, ...] = ()


def check_request(request: EngineRequest, vocab_size: int, max_model_len: int) -> None:
    """InvalidRequest for what no engine can run: bad sampling values, an empty prompt, token
    ids outside the vocabulary, a context past the model's, a resume that leaves nothing to
    generate. (Engines add their own checks: a duplicate id, what they do not offer.)"""
    request.sampling.validate()
    if not request.prompt_token_ids:
        raise InvalidRequest("the prompt is empty")
    context = (*request.prompt_token_ids, *request.resumed_token_ids)
    bad = [t for t in context if not 0 <= t < vocab_size]
    if bad:
        raise InvalidRequest(f"token ids {bad[:5]} are outside the vocabulary")
    total = len(request.prompt_token_ids) + request.sampling.max_tokens
    if total > max_model_len:
        raise InvalidRequest(
            f"prompt ({len(request.prompt_token_ids)} tokens) + max_tokens "
            f"({request.sampling.max_tokens}) exceeds the model's context of "
            f"{max_model_len} tokens"
        )
    if len(request.resumed_token_ids) >= request.sampling.max_tokens:
        raise InvalidRequest(
            f"{len(request.resumed_token_ids)} resumed tokens leave nothing to generate "
            f"within max_tokens={request.sampling.max_tokens}"
        )


@dataclass(frozen=True, slots=True)
class RequestOutput:
    """What one iteration produced for one request."""

    request_id: str
    new_token_ids: tuple[int, ...]
    text_delta: str  # detokenised text for new_token_ids, stop strings removed
    finished: bool = False
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str = ""  # FinishReason.ERROR: why the engine failed on this request alone


@dataclass(frozen=True, slots=True)
class IterationResult:
    phase: Phase
    batch_size: int  # requests in this iteration's forward pass
    context_tokens: int  # sum of context lengths in the batch
    duration_s: float
    outputs: tuple[RequestOutput, ...] = ()


@dataclass(frozen=True, slots=True)
class EngineStats:
    loaded: bool
    running: int  # requests decoding
    waiting: int  # requests admitted, prefill pending
    kv_capacity_tokens: int
    kv_used_tokens: int
    kv_bytes_allocated: int  # measured from the tensors actually allocated
    kv_bytes_per_token: int
    kv_resizable: bool
    weights_bytes: int
    max_model_len: int
    iterations: int = 0
    batch_sizes: tuple[int, ...] = field(default=())  # recent per-iteration batch sizes
    # Requests preempted (recompute) or cut short because the KV pool was full: each one is
    # an out-of-memory hazard the forward-looking memory scaling exists to avoid.
    kv_pressure_events: int = 0


@runtime_checkable
class Engine(Protocol):
    """One model instance. All methods are called from a single thread."""

    kind: EngineKind

    def encode(self, prompt: str) -> list[int]: ...

    def add_request(self, request: EngineRequest) -> None:
        """Admit a request; it joins the next iteration. Raises InvalidRequest,
        KVCapacityExceeded or NotLoaded; a refused request leaves no trace."""

    def abort_request(self, request_id: str) -> RequestOutput | None:
        """Drop a request and free its KV at once. Unknown ids are ignored (returns None)."""

    def has_work(self) -> bool: ...

    def step(self) -> IterationResult:
        """Run exactly one iteration (one forward pass) for this instance's batch. A failure
        caused by one request ends that request alone (FinishReason.ERROR); step() raises
        only for a failure of the engine itself."""

    def stats(self) -> EngineStats: ...

    def resize_kv(self, capacity_tokens: int) -> int:
        """Resize the KV pool between iterations; returns bytes actually allocated.
        Raises KVNotResizable, or KVCapacityExceeded if live requests would not fit."""

    def offload(self) -> None:
        """Release weights (and KV); in-flight requests must have been aborted first."""

    def load(self) -> None: ...

    def close(self) -> None: ...
