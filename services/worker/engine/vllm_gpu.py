"""CUDA-only parts of the vLLM engine (untested on the CPU-only dev machine; bench/gpu_check.py
exercises them on a GPU).

- Start-up: with `kv_cache_memory_bytes` set, vLLM still refuses to start unless free memory
  >= gpu_memory_utilization x total, so each instance asks only for what it needs and a second
  instance can start next to the first.
- Sleep mode: vLLM's CuMem allocator is a process singleton; `sleep()`/`wake_up()` act on every
  engine's memory and vLLM asserts one sleep-mode engine per process. `own_allocations()`
  scopes the allocator to one engine's allocations, `multi_instance_cumem()` lifts the check.
- kvcached: elastic KV through its per-process memory limit.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_GIB = 1 << 30
_kvcached_limits: dict[int, int] = {}  # id(engine) -> bytes; kvcached has one limit per process


def cuda_engine_args(kv_bytes: int, weights_bytes: int) -> dict[str, Any]:
    import torch

    total = torch.cuda.get_device_properties(0).total_memory
    need = kv_bytes + weights_bytes + 2 * _GIB  # + activations, workspace, CUDA context
    return {
        "enable_sleep_mode": True,
        "gpu_memory_utilization": min(0.9, max(0.02, need / total)),
    }


def kvcached_enabled(device: str) -> bool:
    """kvcached is used only on CUDA, when installed and switched on for this process."""
    return (
        device == "cuda"
        and importlib.util.find_spec("kvcached") is not None
        and os.environ.get("ENABLE_KVCACHED", "").lower() == "true"
    )


def set_kvcached_limit(engine_key: int, limit_bytes: int | None) -> int:
    """Set one engine's share of kvcached's KV limit; returns the process-wide limit.

    kvcached keys its limit by `KVCACHED_IPC_NAME` (one per process), so engines in one process
    share one limit: it is the sum of their shares. `None` drops the engine's share.
    """
    from kvcached.cli.utils import get_kv_cache_limit, init_kv_cache_limit, update_kv_cache_limit
    from kvcached.utils import DEFAULT_IPC_NAME

    if limit_bytes is None:
        _kvcached_limits.pop(engine_key, None)
    else:
        _kvcached_limits[engine_key] = limit_bytes
    limit_bytes = sum(_kvcached_limits.values())
    if get_kv_cache_limit(DEFAULT_IPC_NAME) is None:
        init_kv_cache_limit(DEFAULT_IPC_NAME, limit_bytes)
    else:
        update_kv_cache_limit(DEFAULT_IPC_NAME, limit_bytes)
    return limit_bytes


def _cumem_allocator() -> Any:
    from vllm.device_allocator.cumem import CuMemAllocator

    return CuMemAllocator.get_instance()


def cumem_pointers() -> set[int]:
    return set(_cumem_allocator().pointer_to_data)


@contextmanager
def multi_instance_cumem() -> Iterator[None]:
    """Let a second sleep-mode engine load its weights into the shared CuMem allocator.

    vLLM asserts the allocator is empty before loading weights because sleep/wake would act
    on every engine; `own_allocations()` removes that hazard, so the check can be lifted.
    """
    allocator_cls = type(_cumem_allocator())
    original = allocator_cls.get_current_usage
    allocator_cls.get_current_usage = lambda self: 0  # type: ignore[method-assign]
    try:
        yield
    finally:
        allocator_cls.get_current_usage = original  # type: ignore[method-assign]


@contextmanager
def own_allocations(owned: set[int]) -> Iterator[None]:
    """Make the CuMem allocator see only one engine's allocations during sleep/wake."""
    allocator = _cumem_allocator()
    full = allocator.pointer_to_data
    allocator.pointer_to_data = _ScopedAllocations(full, owned)
    try:
        yield
    finally:
        allocator.pointer_to_data = full


class _ScopedAllocations(dict):  # type: ignore[type-arg]
    """A view of the allocator's table restricted to `owned` pointers.

    Frees of other engines' tensors during a sleep's gc pass still reach the full table.
    """

    def __init__(self, full: dict[int, Any], owned: set[int]) -> None:
        super().__init__((p, d) for p, d in full.items() if p in owned)
        self._full = full

    def pop(self, key: int, *default: Any) -> Any:
        super().pop(key, None)
        return self._full.pop(key, *default)

    def __setitem__(self, key: int, value: Any) -> None:
        super().__setitem__(key, value)
        self._full[key] = value
