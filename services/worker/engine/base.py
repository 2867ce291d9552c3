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


class FinishReason(enum.Enum):
    STOP = "stop"  # EOS token or a stop string
    LENGTH = "length"  # max_tokens reached, or the model's context is full
    ABORT = "abort"  # aborted by the client or the scheduler
    # The instance was preempted or drained (never from an engine: the worker's eviction
    # sets it); the scheduler re-dispatches the request with its tokens so far.
    PREEMPTED = "preempted"


class Phase(enum.Enum):
    IDLE = "idle"
    PREFILL = "prefill"
    DECODE = "decode"


class EngineKind(enum.Enum):
    TORCH = "torch"
    VLLM = "vllm"
    OPENVINO = "openvino"


class EngineError(Exception):
    """Base class of errors an engine raises; the worker maps them to gRPC statuses."""


class InvalidRequest(EngineError):
    """The request can never be served by this instance (bad parameters, too long)."""


class KVCapacityExceeded(EngineError):
    """Admitting the request now would exceed the instance's KV capacity."""


class KVNotResizable(EngineError):
    """The engine's KV pool is fixed at start (the memory service treats it as a fixed pool)."""


class NotLoaded(EngineError):
    """The instance's weights are offloaded; load() first."""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    max_tokens: int = 16
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # Keep generating past end-of-sequence tokens until max_tokens (trace replay and
    # benchmarks, where output lengths come from the trace).
    ignore_eos: bool = False

    def validate(self) -> None:
        if self.temperature < 0:
            raise InvalidRequest(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise InvalidRequest(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens <= 0:
            raise InvalidRequest(f"max_tokens must be > 0, got {self.max_tokens}")


@dataclass(frozen=True, slots=True)
class EngineRequest:
    request_id: str
    prompt_token_ids: tuple[int, ...]
    sampling: SamplingParams
    # Tokens already generated before a preemption; the engine recomputes their KV together
    # with the prompt and continues from there (recompute-based migration, DESIGN.md §1).
    resumed_token_ids: tuple[int, ...] = ()


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
        """Run exactly one iteration (one forward pass) for this instance's batch."""

    def stats(self) -> EngineStats: ...

    def resize_kv(self, capacity_tokens: int) -> int:
        """Resize the KV pool between iterations; returns bytes actually allocated.
        Raises KVNotResizable, or KVCapacityExceeded if live requests would not fit."""

    def offload(self) -> None:
        """Release weights (and KV); in-flight requests must have been aborted first."""

    def load(self) -> None: ...

    def close(self) -> None: ...
