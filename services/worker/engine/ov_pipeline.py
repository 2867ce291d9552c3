"""One OpenVINO GenAI ContinuousBatchingPipeline: build, step, add/cancel, rebuild, release.

The pipeline holds the compiled model (weights, repacked for this CPU's kernels) and a KV
pool of a fixed number of blocks, allocated by its scheduler at the first step and never
resized. `start_rebuild(blocks)` is therefore the only way to change the pool: the old
pipeline is released at once (never two copies of the weights), and a new one is built on a
background thread (the model is already converted and in the page cache: a rebuild costs a
compilation, `rebuild_s`, counted in `rebuilds`). Until it is ready the instance's requests
wait (the device keeps running the other instances); `poll()` swaps it in between steps.

Memory reported: `weights_bytes` is the IR's constants (what the plugin keeps, give or take
its repacking); `kv_bytes_allocated` is `blocks × bytes per block`, measured from the
pipeline's metrics after a one-token warm-up at build (which also compiles the kernels the
first request would otherwise pay for). During a rebuild it is already the new pool's size.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from concurrent.futures import Future
from typing import Any

import numpy as np
from loguru import logger

from slinfer.services.worker.engine.ov_config import CPU_BLOCK_SIZE, OpenVinoEngineConfig
from slinfer.services.worker.engine.ov_convert import OvModel, blob_dir, prepare_ov_model
from slinfer.services.worker.engine.ov_requests import OvSequence

_WARMUP_ID = 0
_TOKENIZERS_ENV = "OPENVINO_TOKENIZERS_PATH_GENAI"


def _point_genai_at_tokenizers() -> None:
    """GenAI finds the openvino-tokenizers extension through this variable, which its Python
    binding sets only while a constructor runs; a later step that needs it (seen under load:
    "Failed to load shared object .../openvino_genai/libopenvino_tokenizers.so") then looks in
    the wrong directory and fails the iteration. Point it at the installed library for good."""
    if os.environ.get(_TOKENIZERS_ENV):
        return
    import importlib.util

    spec = importlib.util.find_spec("openvino_tokenizers")
    for root in (spec.submodule_search_locations or []) if spec else []:
        lib = os.path.join(root, "lib", "libopenvino_tokenizers.so")
        if os.path.exists(lib):
            os.environ[_TOKENIZERS_ENV] = lib
            return


class OvPipeline:
    def __init__(self, config: OpenVinoEngineConfig):
        _point_genai_at_tokenizers()
        self.config = config
        self.kv_blocks = config.kv_capacity_tokens // CPU_BLOCK_SIZE
        self.model: OvModel | None = None
        self.weights_bytes = 0
        self.kv_bytes_per_token = 0
        self.build_s = 0.0  # the last build (cold start, or a rebuild's)
        self.rebuilds = 0
        self.rebuild_s = 0.0
        self._pipe: Any = None
        self._block_bytes = 0
        self._pending: Future[Any] | None = None  # a rebuild in progress
        self._cancelled = False  # requests cancelled since the last step

    @property
    def loaded(self) -> bool:
        return self._pipe is not None or self._pending is not None

    @property
    def ready(self) -> bool:
        """A pipeline is there to step (False while a rebuild runs)."""
        self.poll()
        return self._pipe is not None

    @property
    def kv_bytes_allocated(self) -> int:
        return self.kv_blocks * self._block_bytes if self.loaded else 0

    def build(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self.poll()
        if self._pipe is not None:
            return
        t0 = time.perf_counter()
        self._pipe = self._new_pipeline()
        self.build_s = time.perf_counter() - t0

    def _new_pipeline(self) -> Any:
        import openvino_genai as ov_genai

        if self.model is None:
            self.model = prepare_ov_model(
                self.config.model_dir,
                self.config.weights,
                progress=_log_progress,
                root=self.config.model_root,
            )
            self.weights_bytes = _bin_bytes(self.model.path)
        scheduler = ov_genai.SchedulerConfig()
        scheduler.num_kv_blocks = max(self.kv_blocks, 1)
        scheduler.cache_size = 0
        scheduler.dynamic_split_fuse = True
        scheduler.max_num_batched_tokens = self.config.max_batched_tokens
        scheduler.max_num_seqs = self.config.max_batch_size
        scheduler.enable_prefix_caching = False
        blobs = blob_dir() if self.config.cache_blobs else None
        if blobs is not None:
            blobs.mkdir(parents=True, exist_ok=True)
        pipe = ov_genai.ContinuousBatchingPipeline(
            str(self.model.path), scheduler, "CPU", self.config.properties(blobs)
        )
        self._warm_up(pipe)
        return pipe

    def _warm_up(self, pipe: Any) -> None:
        import openvino as ov
        import openvino_genai as ov_genai

        config = ov_genai.GenerationConfig()
        config.max_new_tokens = 1
        config.ignore_eos = True
        handle = pipe.add_request(_WARMUP_ID, ov.Tensor(np.array([[1]], np.int64)), config)
        while pipe.has_non_finished_requests():
            pipe.step()
        if handle.can_read():
            handle.read()
        total = pipe.get_metrics().cache_size_in_bytes
        self._block_bytes = total // max(self.kv_blocks, 1)
        self.kv_bytes_per_token = self._block_bytes // CPU_BLOCK_SIZE

    def release(self) -> None:
        if self._pending is not None:  # let a rebuild finish, then drop it too
            self._pending.result()
            self.poll()
        if self._pipe is None:
            return
        if self._cancelled:  # let its scheduler free the cancelled requests' blocks first
            self._pipe.step()
        self._pipe = None
        self._cancelled = False
        gc.collect()

    def start_rebuild(self, kv_blocks: int) -> None:
        """Release the pipeline now; build one with `kv_blocks` on a background thread."""
        self.release()
        self.kv_blocks = kv_blocks
        future: Future[Any] = Future()
        t0 = time.perf_counter()

        def build() -> None:
            try:
                future.set_result(self._new_pipeline())
            except BaseException as exc:  # surfaced by poll() on the device thread
                future.set_exception(exc)
            finally:
                self.rebuild_s += time.perf_counter() - t0

        self._pending = future
        self.rebuilds += 1
        threading.Thread(target=build, name="ov-rebuild", daemon=True).start()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until a rebuild in progress is done (tests, offload)."""
        if self._pending is not None:
            self._pending.exception(timeout_s)
        return self.ready

    def poll(self) -> None:
        """Swap in a finished rebuild (called from the engine's thread, between steps)."""
        if self._pending is not None and self._pending.done():
            future, self._pending = self._pending, None
            self._pipe = future.result()  # a failed build raises here, on the device thread

    # ---- requests -------------------------------------------------------------------------

    def add(self, seq: OvSequence, pipeline_id: int) -> None:
        import openvino as ov
        import openvino_genai as ov_genai

        sampling = seq.request.sampling
        config = ov_genai.GenerationConfig()
        config.max_new_tokens = seq.remaining
        config.ignore_eos = True  # EOS and stop strings are slinfer's (openvino_engine.py)
        if sampling.temperature > 0:
            config.do_sample = True
            config.temperature = sampling.temperature
            config.top_p = sampling.top_p
            seed = sampling.seed if sampling.seed is not None else _os_seed()
            config.rng_seed = (seed + seq.seed_offset) & 0xFFFFFFFF
        else:
            config.do_sample = False
        ids = ov.Tensor(np.array([seq.token_ids], dtype=np.int64))
        seq.handle = self._pipe.add_request(pipeline_id, ids, config)
        seq.pipeline_id = pipeline_id

    def cancel(self, seq: OvSequence) -> None:
        if seq.handle is not None:
            seq.handle.cancel()  # the pipeline frees its blocks at the next step
            self._cancelled = True
        seq.handle = None

    def step(self) -> int:
        """One iteration; returns how many requests it scheduled."""
        self._pipe.step()
        self._cancelled = False
        return int(self._pipe.get_metrics().scheduled_requests)

    def read(self, seq: OvSequence) -> list[int]:
        handle = seq.handle
        if handle is None or not handle.can_read():
            return []
        new: list[int] = []
        for output in handle.read().values():
            new.extend(int(t) for t in output.generated_ids)
        return new


def _bin_bytes(path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.bin"))


def _os_seed() -> int:
    return int.from_bytes(os.urandom(4), "little")


def _log_progress(stage: str, fraction: float) -> None:
    logger.info("openvino: {} ({:.0%})", stage, fraction)
