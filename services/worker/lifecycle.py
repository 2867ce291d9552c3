"""An instance's life on a worker: load, unload, evict (DESIGN.md §3–5).

- load: planned through the memory ledger first (weights + initial KV), then the engine is
  built and calibrated (its perf tables measured or read from the cache and published), and
  the instance turns READY. A failed load leaves nothing behind.
- unload: every in-flight request is aborted and its stream closed, the engine closed, and
  the memory released through the ledger: the one path every unload takes (keep-alive, an
  operator, an eviction).
- evict (consolidation, DESIGN.md §4): the instance stops taking requests (DRAINING), every
  in-flight stream ends with `FinishReason.PREEMPTED` — which tells the scheduler that owns
  it to re-dispatch it with its tokens so far — and the instance is unloaded. A loading
  instance is never evicted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import grpc
from loguru import logger

from slinfer.services.common import keys
from slinfer.services.common.convert import ENGINE_FROM_PB, WEIGHTS_FROM_PB
from slinfer.services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InstanceNotFound,
    InvalidArgument,
    NoCapacity,
    SlinferError,
)
from slinfer.services.common.model_dir import inspect_model_dir
from slinfer.services.common.records import InstanceState
from slinfer.services.worker import metrics
from slinfer.services.worker.calibration import calibrate
from slinfer.services.worker.engine.base import (
    EngineError,
    EngineKind,
    FinishReason,
    RequestOutput,
)
from slinfer.services.worker.engine.registry import (
    EngineSpec,
    create_engine,
    engine_for,
    resolve_weights,
)
from slinfer.services.worker.instance import Instance
from slinfer.services.worker.memory_agent import MemoryAgent
from slinfer.services.worker.node import NodeContext
from slinfer.services.worker.profiler import ProfileCache
from slinfer.v1 import worker_pb2


class Lifecycle:
    def __init__(self, node: NodeContext, memory: MemoryAgent, profiles: ProfileCache) -> None:
        self.node = node
        self.memory = memory
        self.profiles = profiles
        self.loader = ThreadPoolExecutor(1, thread_name_prefix=f"loader-{node.node_id}")
        self._loading: dict[str, asyncio.Future[Instance]] = {}
        self._unloads: set[asyncio.Task[int]] = set()
        node.device.on_failure = self._failed

    def _failed(self, inst: Instance) -> None:
        """An instance whose engine broke is unloaded (its streams already ended)."""

        async def _unload() -> int:
            with contextlib.suppress(InstanceNotFound):
                return await self.unload(inst.instance_id)
            return 0

        task = asyncio.get_running_loop().create_task(_unload(), name=f"unload:{inst.instance_id}")
        self._unloads.add(task)
        task.add_done_callback(self._unloads.discard)

    def close(self) -> None:
        self.loader.shutdown(wait=True)

    # ---- load ------------------------------------------------------------------------------

    async def load(self, req: worker_pb2.LoadInstanceRequest) -> tuple[Instance, bool]:
        """(instance, already loaded). Idempotent for the same instance id and model."""
        node, iid = self.node, req.instance_id
        if not keys.valid_name(iid) or not keys.valid_name(req.model_id):
            raise InvalidArgument("instance_id and model_id must be 1-64 of [A-Za-z0-9._-]")
        if req.kv_capacity_tokens <= 0:
            raise InvalidArgument("kv_capacity_tokens must be > 0")
        existing = node.instances.get(iid)
        if existing is not None:
            if existing.model_id != req.model_id:
                raise AlreadyExists(f"instance {iid} exists for model {existing.model_id}")
            if iid in self._loading:
                await asyncio.shield(self._loading[iid])
            if existing.state is InstanceState.FAILED:
                raise FailedPrecondition(f"instance {iid} failed to load: {existing.error}")
            return existing, True
        if req.engine not in ENGINE_FROM_PB or req.weights not in WEIGHTS_FROM_PB:
            raise InvalidArgument(f"unknown engine {req.engine} or weight format {req.weights}")
        info = inspect_model_dir(req.path)  # a bad path is refused before anything is planned
        kind = engine_for(node.config.kind, ENGINE_FROM_PB[req.engine], info.path)
        weights = resolve_weights(
            kind,
            EngineSpec(info.path, req.kv_capacity_tokens, node.device_name,
                       weights=WEIGHTS_FROM_PB[req.weights]),
        )  # fmt: skip
        inst = Instance(iid, req.model_id, req.path, kind, req.kv_capacity_tokens, weights=weights)
        node.instances[iid] = inst
        fut: asyncio.Future[Instance] = asyncio.get_running_loop().create_future()
        self._loading[iid] = fut
        try:
            await self._build(inst, kind, info.path)
        except Exception as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters re-raise their own copy
            raise
        finally:
            self._loading.pop(iid, None)
        fut.set_result(inst)
        return inst, False

    async def _build(self, inst: Instance, kind: EngineKind, path: object) -> None:
        node, iid = self.node, inst.instance_id
        spec = EngineSpec(
            path=path,  # type: ignore[arg-type]
            kv_capacity_tokens=inst.kv_capacity_tokens,
            device=node.device_name,
            num_threads=node.config.num_threads,
            cpu_dtype=node.config.cpu_dtype,
            weights=inst.weights,
        )
        t0, engine = time.perf_counter(), None
        try:
            await self.memory.plan_load(inst)  # weights + initial KV approved (or NoCapacity)
            spec = replace(spec, kv_elastic=self.memory.manages(inst.instance_id))
            await node.publish(inst)
            # PyTorch weights load on the loader thread: the device keeps running its other
            # instances' iterations meanwhile (only calibration steps the new engine). vLLM's
            # build touches process-wide state (RNG, thread settings, distributed groups), so
            # it runs on the device thread, between iterations; so does a CUDA build.
            if kind is EngineKind.VLLM or spec.device == "cuda":
                engine = await node.device.call(create_engine, kind, spec)
            else:
                engine = await asyncio.get_running_loop().run_in_executor(
                    self.loader, create_engine, kind, spec
                )
            inst.load_s = time.perf_counter() - t0
            cal = await node.device.call(
                calibrate,
                engine,
                inst.model_id,
                spec.path,
                node.config.kind,
                node.threads,
                node.config.profile_grid,
                self.profiles,
            )
            inst.stats = await node.device.call(engine.stats)
            await self.memory.settle_load(inst)
        except Exception as exc:
            node.instances.pop(iid, None)
            if engine is not None:
                with contextlib.suppress(Exception):
                    await node.device.call(engine.close)
            await self.memory.release(inst)
            await node.forget(iid)
            if isinstance(exc, SlinferError | EngineError | grpc.aio.AioRpcError):
                raise
            if isinstance(exc, MemoryError):
                raise NoCapacity(
                    f"node {node.node_id} ran out of memory loading {inst.model_id}; retry on "
                    "another node"
                ) from exc
            # What the engine's libraries raise on files they cannot use: the model cannot
            # load here, whatever the node (the scheduler does not try it elsewhere).
            raise FailedPrecondition(
                f"the {kind.value} engine could not load model {inst.model_id} from "
                f"{inst.path}: {type(exc).__name__}: {exc}"
            ) from exc
        inst.engine = engine
        inst.perf, inst.spec, inst.profile, inst.profile_s = (
            cal.perf,
            cal.spec,
            cal.tables,
            cal.profile_s,
        )
        if inst.stats is not None:
            node.device.calibration.observe_load(inst.stats.weights_bytes, inst.load_s)
        with contextlib.suppress(Exception):
            await node.store.put(
                keys.profile(inst.model_id, node.label), {**cal.tables, "label": node.label}
            )
        inst.state = InstanceState.READY
        inst.idle_since = time.monotonic()
        metrics.LOAD_SECONDS.labels(inst.model_id).observe(inst.load_s)
        metrics.INSTANCES.labels(node.node_id).set(len(node.instances))
        await node.publish(inst)
        logger.info(
            "loaded instance={} model={} engine={} weights={} in {:.2f}s",
            iid,
            inst.model_id,
            kind.value,
            inst.weights.value,
            inst.load_s,
        )

    # ---- unload and evict ------------------------------------------------------------------

    async def unload(self, instance_id: str, min_idle_s: float = 0.0) -> int:
        """Abort what runs, close the engine, release the memory. Returns requests aborted.
        `min_idle_s` > 0 (keep-alive): only an instance idle at least that long, else
        FAILED_PRECONDITION."""
        node = self.node
        inst = node.instances.get(instance_id)
        if inst is None:
            raise InstanceNotFound(f"no instance {instance_id} on node {node.node_id}")
        if min_idle_s > 0 and (
            inst.state is not InstanceState.READY or inst.idle_s(time.monotonic()) < min_idle_s
        ):
            raise FailedPrecondition(
                f"instance {instance_id} is {'busy' if inst.busy else inst.state.value}, or "
                f"was used in the last {min_idle_s:.0f} s: kept"
            )
        inst.state = InstanceState.UNLOADING
        aborted = 0
        if inst.engine is not None:
            engine = inst.engine
            for rid in list(inst.streams):
                try:
                    out = await node.device.call(engine.abort_request, rid)
                except Exception as exc:  # a broken engine: its streams end all the same
                    logger.warning("abort of {} on {} failed: {}", rid, instance_id, exc)
                    out = None
                queue = inst.streams.get(rid)
                if queue is not None:
                    queue.put_nowait(out)
                aborted += 1
            try:
                await node.device.call(engine.close)
            except Exception as exc:  # its memory is released below all the same
                logger.warning("closing the engine of {} failed: {}", instance_id, exc)
        node.instances.pop(instance_id, None)
        await self.memory.release(inst)  # every unload (keep-alive, request, eviction) frees here
        await node.forget(instance_id)
        metrics.INSTANCES.labels(node.node_id).set(len(node.instances))
        logger.info("unloaded instance={} aborted={}", instance_id, aborted)
        return aborted

    async def evict(self, instance_id: str) -> int:
        """Hand every request of the instance back for re-dispatch, then unload it.

        Returns the number of requests handed back.
        """
        node = self.node
        inst = node.instances.get(instance_id)
        if inst is None:
            raise InstanceNotFound(f"no instance {instance_id} on node {node.node_id}")
        if inst.state is InstanceState.LOADING:
            # DESIGN.md §4: never evict an instance that is loading (its load is in flight).
            raise FailedPrecondition(
                f"instance {instance_id} is still loading; evict it once it is ready"
            )
        if inst.state is InstanceState.READY:
            inst.state = InstanceState.DRAINING  # submit() refuses it from now on
            try:
                await node.publish(inst)
            except Exception as exc:  # the unload below removes the record anyway
                logger.warning("could not publish draining state of {}: {}", instance_id, exc)
        moved = 0
        engine = inst.engine
        if engine is not None:
            for rid in list(inst.streams):
                out = await node.device.call(engine.abort_request, rid)
                queue = inst.streams.get(rid)
                if out is None or queue is None:
                    continue  # finished meanwhile: its stream already ended normally
                queue.put_nowait(
                    RequestOutput(
                        request_id=rid,
                        new_token_ids=(),
                        text_delta="",
                        finished=True,
                        finish_reason=FinishReason.PREEMPTED,
                        prompt_tokens=out.prompt_tokens,
                        completion_tokens=out.completion_tokens,
                    )
                )
                moved += 1
        await self.unload(instance_id)
        logger.info(
            "evicted instance={} node={} requests_handed_back={}",
            instance_id,
            node.node_id,
            moved,
        )
        return moved
