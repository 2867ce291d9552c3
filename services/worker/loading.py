"""Loading an instance on a worker: engine and weight format chosen, memory planned through
the ledger, the engine built, its performance tables measured or read, the instance published."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from loguru import logger

from slinfer.services.common import keys
from slinfer.services.common.convert import ENGINE_FROM_PB, WEIGHTS_FROM_PB
from slinfer.services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from slinfer.services.common.model_dir import inspect_model_dir
from slinfer.services.worker import metrics
from slinfer.services.worker.calibration import calibrate
from slinfer.services.worker.engine.base import EngineKind
from slinfer.services.worker.engine.registry import (
    EngineSpec,
    create_engine,
    engine_for,
    resolve_weights,
)
from slinfer.services.worker.instance import Instance, InstanceState
from slinfer.v1 import worker_pb2

if TYPE_CHECKING:
    from slinfer.services.worker.server import WorkerService


async def load_instance(
    w: WorkerService, req: worker_pb2.LoadInstanceRequest
) -> tuple[Instance, bool]:
    """Load an instance: validate, plan its memory, build the engine (loader thread, or the
    device thread for engines that touch process-wide state), calibrate, publish."""
    iid = req.instance_id
    if not keys.valid_name(iid) or not keys.valid_name(req.model_id):
        raise InvalidArgument("instance_id and model_id must be 1-64 of [A-Za-z0-9._-]")
    if req.kv_capacity_tokens <= 0:
        raise InvalidArgument("kv_capacity_tokens must be > 0")
    existing = w.instances.get(iid)
    if existing is not None:
        if existing.model_id != req.model_id:
            raise AlreadyExists(f"instance {iid} exists for model {existing.model_id}")
        if iid in w._loading:
            await asyncio.shield(w._loading[iid])
        if existing.state is InstanceState.FAILED:
            raise FailedPrecondition(f"instance {iid} failed to load: {existing.error}")
        return existing, True
    if req.engine not in ENGINE_FROM_PB or req.weights not in WEIGHTS_FROM_PB:
        raise InvalidArgument(f"unknown engine {req.engine} or weight format {req.weights}")
    info = inspect_model_dir(req.path)  # a bad path is refused before anything is planned
    kind = engine_for(w.config.kind, ENGINE_FROM_PB[req.engine], info.path)
    device = "cuda" if w.config.kind == "gpu" else "cpu"
    weights = resolve_weights(
        kind,
        EngineSpec(info.path, req.kv_capacity_tokens, device, None, WEIGHTS_FROM_PB[req.weights]),
    )
    inst = Instance(iid, req.model_id, req.path, kind, req.kv_capacity_tokens, weights=weights)
    w.instances[iid] = inst
    fut: asyncio.Future[Instance] = asyncio.get_running_loop().create_future()
    w._loading[iid] = fut
    spec = EngineSpec(
        path=info.path,
        kv_capacity_tokens=req.kv_capacity_tokens,
        device=device,
        num_threads=w.config.num_threads,
        weights=weights,
    )
    t0, engine = time.perf_counter(), None
    try:
        await w.memory.plan_load(inst)  # weights + initial KV approved (or NoCapacity)
        await w._publish(inst)
        # PyTorch weights load on the loader thread: the device keeps running its other
        # instances' iterations meanwhile (only calibration steps the new engine). vLLM's
        # build touches process-wide state (RNG, thread settings, distributed groups), so
        # it runs on the device thread, between iterations.
        if kind is EngineKind.VLLM or spec.device == "cuda":
            engine = await w.device.call(create_engine, kind, spec)
        else:
            engine = await asyncio.get_running_loop().run_in_executor(
                w.loader, create_engine, kind, spec
            )
        inst.load_s = time.perf_counter() - t0
        cal = await w.device.call(
            calibrate,
            engine,
            req.model_id,
            spec.path,
            w.config.kind,
            w.threads,
            w.config.profile_grid,
            w.profiles,
        )
        inst.stats = await w.device.call(engine.stats)
        await w.memory.settle_load(inst)
    except Exception as exc:
        w.instances.pop(iid, None)
        if engine is not None:
            with contextlib.suppress(Exception):
                await w.device.call(engine.close)
        await w.memory.release(inst)
        with contextlib.suppress(Exception):
            await w.store.delete(keys.instance(iid))
        fut.set_exception(exc)
        fut.exception()  # retrieved: waiters re-raise their own copy
        raise
    finally:
        w._loading.pop(iid, None)
    inst.engine = engine
    inst.perf, inst.spec, inst.profile, inst.profile_s = (
        cal.perf,
        cal.spec,
        cal.tables,
        cal.profile_s,
    )
    with contextlib.suppress(Exception):
        await w.store.put(keys.profile(req.model_id, w.label), {**cal.tables, "label": w.label})
    inst.state = InstanceState.READY
    inst.idle_since = time.monotonic()
    metrics.LOAD_SECONDS.observe(inst.load_s)
    metrics.INSTANCES.labels(w.node_id).set(len(w.instances))
    await w._publish(inst)
    fut.set_result(inst)
    logger.info(
        "loaded instance={} model={} engine={} weights={} in {:.2f}s",
        iid,
        req.model_id,
        kind.value,
        weights.value,
        inst.load_s,
    )
    return inst, False
