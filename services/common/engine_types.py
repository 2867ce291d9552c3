"""Types shared by the gateway, the worker and its engines (DESIGN.md §5).

Engine kinds, sampling parameters, finish reasons and the errors an engine raises live here,
below both the services and the engines, so that converting them at a service's edge
(`convert.py`) or mapping them to gRPC statuses (`errors.py`) needs no engine code.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

# Sane bounds for sampling (docs/API.md): beyond them a value is a mistake, not a choice.
MAX_TEMPERATURE = 100.0
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256
SEED_RANGE = (-(2**63), 2**63 - 1)


class FinishReason(enum.Enum):
    STOP = "stop"  # EOS token or a stop string
    LENGTH = "length"  # max_tokens reached, or the model's context is full
    ABORT = "abort"  # aborted by the client or the scheduler
    # The instance was preempted or drained (never from an engine: the worker's eviction
    # sets it); the scheduler re-dispatches the request with its tokens so far.
    PREEMPTED = "preempted"
    # The engine failed on this request alone (never its neighbours): the scheduler ends the
    # client's stream with an error and does not retry it elsewhere.
    ERROR = "error"


class EngineKind(enum.Enum):
    TORCH = "torch"
    VLLM = "vllm"
    OPENVINO = "openvino"


class WeightFormat(enum.Enum):
    """How an instance stores its projection weights, chosen per deploy (docs/ENGINE.md)."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    INT8 = "int8"
    INT4 = "int4"

    @classmethod
    def parse(cls, value: str | WeightFormat | None) -> WeightFormat:
        if isinstance(value, WeightFormat):
            return value
        if not value:
            return cls.AUTO
        try:
            return cls(value.lower())
        except ValueError:
            names = "|".join(f.value for f in cls)
            raise ValueError(f"unknown weight format {value!r}; use one of {names}") from None

    @property
    def quantized(self) -> bool:
        return self in (WeightFormat.INT8, WeightFormat.INT4)


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
    # Batch-invariant decoding (docs/RELIABILITY.md): the request runs in its own forward
    # pass, and a resumed request replays its tokens one by one, so a seeded or greedy
    # request gives the same tokens whatever else is batched and across a re-dispatch.
    deterministic: bool = False

    def validate(self) -> None:
        """Raise InvalidRequest naming the field, its value and the range it must be in."""
        t = self.temperature
        if not math.isfinite(t) or not 0 <= t <= MAX_TEMPERATURE:
            raise InvalidRequest(
                f"temperature must be a finite number in [0, {MAX_TEMPERATURE:g}] "
                f"(0 = greedy), got {t}"
            )
        if not math.isfinite(self.top_p) or not 0 < self.top_p <= 1:
            raise InvalidRequest(f"top_p must be a finite number in (0, 1], got {self.top_p}")
        if self.max_tokens <= 0:
            raise InvalidRequest(f"max_tokens must be > 0, got {self.max_tokens}")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise InvalidRequest(
                f"at most {MAX_STOP_STRINGS} stop strings, got {len(self.stop)}"
            )
        for s in self.stop:
            if not s:
                raise InvalidRequest("stop strings must not be empty")
            if len(s) > MAX_STOP_CHARS:
                raise InvalidRequest(
                    f"stop strings must be at most {MAX_STOP_CHARS} characters, got {len(s)}"
                )
        if self.seed is not None and not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise InvalidRequest(f"seed must fit in 64 bits, got {self.seed}")
