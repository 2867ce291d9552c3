"""Process-wide state that several in-process vLLM engines must share (docs/VLLM.md).

vLLM assumes one engine per process. Running several `VllmEngine`s in one worker process, each
stepped in-process, needs these fixes, kept here (and in vllm_gpu.py for CUDA) so that
`vllm_engine.py` reads as the mapping of the Engine interface and nothing else:

1. Environment, set before vLLM is first imported: in-process engine core
   (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, otherwise the CPU platform switches to the
   multiprocess executor and a busy loop steps the engine on its own) and no legacy
   `VLLM_CPU_KVCACHE_SPACE`, which would override the KV size each engine asks for.
2. Distributed state: every engine joins the same world-size-1 gloo group (vLLM re-uses it
   when it is already initialised), but an engine's shutdown tears the group down, which
   breaks every other engine. `released_engine()` keeps the group while others are alive.
3. Process globals vLLM changes while building an engine: its CPU worker replaces
   `torch.set_num_threads` with a no-op for the whole process, and it seeds the global
   random/numpy/torch RNGs. `start_engine()` restores both; each engine sets its own thread
   count before each of its iterations.
4. GPU sleep mode and kvcached: see vllm_gpu.py.
"""

from __future__ import annotations

import atexit
import gc
import os
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from loguru import logger

# The real setter: vLLM re-binds `torch.set_num_threads`, never `torch._C.set_num_threads`.
_set_torch_threads = torch._C.set_num_threads

_lock = threading.Lock()
_live_engines = 0
_env_ready = False
_unfreeze_at_exit = False


def prepare_environment() -> None:
    """Set the process environment vLLM reads at import and engine creation (idempotent)."""
    global _env_ready
    if _env_ready:
        return
    # Forced, not defaulted: with 1 the engine core runs its own stepping loop in a child
    # process and the arbiter can no longer grant single iterations.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None) is not None:
        logger.warning(
            "VLLM_CPU_KVCACHE_SPACE ignored: each VllmEngine sizes its KV pool from "
            "kv_capacity_tokens (kv_cache_memory_bytes)"
        )
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    # No usage reporting from an offline worker.
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    _env_ready = True


def set_threads(num_threads: int | None) -> None:
    if num_threads is not None:
        _set_torch_threads(num_threads)


def restore_torch_set_num_threads() -> None:
    """Undo vLLM's process-wide no-op patch of `torch.set_num_threads`."""
    torch.set_num_threads = _set_torch_threads


def start_engine(args: Any, device: str, num_threads: int | None) -> tuple[Any, set[int]]:
    """Create one in-process LLMEngine; returns it and (CUDA) the CuMem allocations it owns."""
    from vllm.v1.engine.llm_engine import LLMEngine

    from slinfer.services.worker.engine import vllm_gpu

    global _live_engines
    set_threads(num_threads)
    rng = _save_rng()
    try:
        if device != "cuda":
            llm = LLMEngine.from_engine_args(args)
            owned: set[int] = set()
        else:
            before = vllm_gpu.cumem_pointers()
            with vllm_gpu.multi_instance_cumem():
                llm = LLMEngine.from_engine_args(args)
            owned = vllm_gpu.cumem_pointers() - before
    finally:
        restore_torch_set_num_threads()
        _restore_rng(rng)
    with _lock:
        _live_engines += 1
    return llm, owned


def _save_rng() -> tuple[Any, ...]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda


def _restore_rng(state: tuple[Any, ...]) -> None:
    """vLLM seeds the process-global RNGs when it builds an engine; give them back."""
    py, numpy_state, cpu, cuda = state
    random.setstate(py)
    np.random.set_state(numpy_state)
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


@contextmanager
def released_engine() -> Iterator[None]:
    """Shut one engine down without tearing down the distributed group others still use."""
    global _live_engines, _unfreeze_at_exit
    import vllm.v1.engine.core as core_module

    with _lock:
        _live_engines -= 1
        others_alive = _live_engines > 0
    original = core_module.cleanup_dist_env_and_memory
    if others_alive:
        core_module.cleanup_dist_env_and_memory = _keep_dist_env  # type: ignore[assignment]
    try:
        yield
    finally:
        core_module.cleanup_dist_env_and_memory = original
        # Shutdown unfroze the whole heap; collect the engine, then freeze the survivors again
        # as vLLM does at start-up: otherwise each of the next start's gc.collect() calls walks
        # vLLM's millions of module objects (a reload took 5.0 s instead of 0.7 s, docs/VLLM.md).
        gc.collect()
        gc.freeze()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if not _unfreeze_at_exit:
            # Frozen objects outlive interpreter shutdown; native extensions (triton's
            # nanobind) then report them as leaks.
            atexit.register(gc.unfreeze)
            _unfreeze_at_exit = True


def _keep_dist_env(*_args: Any, **_kwargs: Any) -> None:
    """Stands in for vLLM's cleanup_dist_env_and_memory while other engines are alive."""
    # The engine is still referenced during its shutdown; released_engine() collects it after.
    gc.unfreeze()
