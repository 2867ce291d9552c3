"""Readings from a running vLLM engine: its KV pool, and what one iteration scheduled."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class PoolInfo:
    capacity_tokens: int = 0
    kv_bytes_allocated: int = 0
    kv_bytes_per_token: int = 0
    weights_bytes: int = 0


def read_pool(llm: Any, block_size: int) -> PoolInfo:
    scheduler = llm.engine_core.engine_core.scheduler
    config = scheduler.kv_cache_config
    allocated = sum(t.size for t in config.kv_cache_tensors)
    weights = llm.apply_model(lambda m: sum(p.numel() * p.element_size() for p in m.parameters()))
    return PoolInfo(
        # Block 0 is vLLM's null block and never holds KV.
        capacity_tokens=(scheduler.kv_cache_manager.block_pool.num_gpu_blocks - 1) * block_size,
        kv_bytes_allocated=allocated,
        kv_bytes_per_token=allocated // (config.num_blocks * block_size),
        weights_bytes=sum(weights),
    )


def used_tokens(scheduler: Any, block_size: int) -> int:
    """KV slots held by requests, in whole blocks (what vLLM has allocated, not context)."""
    pool = scheduler.kv_cache_manager.block_pool
    return (pool.num_gpu_blocks - 1 - pool.get_num_free_blocks()) * block_size


@dataclass(frozen=True, slots=True)
class ScheduledBatch:
    size: int = 0
    prefill: bool = False
    context_tokens: int = 0


class BatchProbe:
    """Records what vLLM's scheduler put into the current iteration.

    `LLMEngine.step()` does not return the SchedulerOutput, so we wrap the scheduler's
    `schedule()` on this one instance. The wrapper holds the probe, not the engine, so no
    reference cycle keeps a released engine alive.
    """

    def __init__(self) -> None:
        self.batch = ScheduledBatch()
        self._scheduler: Any = None
        self._original: Any = None

    def attach(self, scheduler: Any) -> None:
        self._scheduler = scheduler
        original = self._original = scheduler.schedule
        probe = self

        def schedule(*args: Any, **kwargs: Any) -> Any:
            output = original(*args, **kwargs)
            probe.record(output, scheduler)
            return output

        scheduler.schedule = schedule

    def detach(self) -> None:
        if self._scheduler is not None:
            self._scheduler.schedule = self._original
        self._scheduler = self._original = None

    def reset(self) -> None:
        self.batch = ScheduledBatch()

    def record(self, output: Any, scheduler: Any) -> None:
        scheduled: dict[str, int] = output.num_scheduled_tokens
        # schedule() has already advanced num_computed_tokens by this iteration's tokens, so
        # it is each request's context length once the forward pass is done.
        context = sum(
            r.num_computed_tokens for rid in scheduled if (r := scheduler.requests.get(rid))
        )
        prefill = bool(output.scheduled_new_reqs) or any(n > 1 for n in scheduled.values())
        self.batch = ScheduledBatch(len(scheduled), prefill, context)
