"""Eviction of an instance for consolidation (DESIGN.md §4): preemption and drain.

The consolidator asks a worker to unload an instance with `preempt=True`. The instance stops
taking requests (DRAINING, published so placement skips it), every in-flight request is
aborted in the engine and its stream ends with `FinishReason.PREEMPTED` (not ABORT), which
tells the scheduler that owns the stream to re-dispatch it elsewhere with its tokens so far.
Then the instance goes through the worker's one unload path (`WorkerService.unload_instance`),
which releases its KV and weights; nothing is freed anywhere else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loguru import logger

from slinfer.services.common.errors import FailedPrecondition, InstanceNotFound
from slinfer.services.worker.engine.base import FinishReason, RequestOutput
from slinfer.services.worker.instance import InstanceState

if TYPE_CHECKING:
    from slinfer.services.worker.server import WorkerService
    from slinfer.v1 import worker_pb2


async def unload(worker: WorkerService, request: worker_pb2.UnloadInstanceRequest) -> int:
    """The UnloadInstance RPC: a plain unload, or an eviction when `preempt` is set."""
    if request.preempt:
        return await evict_instance(worker, request.instance_id)
    return await worker.unload_instance(request.instance_id)


async def evict_instance(worker: WorkerService, instance_id: str) -> int:
    """Hand every request of the instance back for re-dispatch, then unload it.

    Returns the number of requests handed back.
    """
    inst = worker.instances.get(instance_id)
    if inst is None:
        raise InstanceNotFound(f"no instance {instance_id} on node {worker.node_id}")
    if inst.state is InstanceState.LOADING:
        # DESIGN.md §4: never evict an instance that is loading (its load is in flight).
        raise FailedPrecondition(
            f"instance {instance_id} is still loading; evict it once it is ready"
        )
    if inst.state is InstanceState.READY:
        inst.state = InstanceState.DRAINING  # submit() refuses it from now on
        try:
            await worker._publish(inst)
        except Exception as exc:  # the unload below removes the record anyway
            logger.warning("could not publish draining state of {}: {}", instance_id, exc)
    moved = 0
    engine = inst.engine
    if engine is not None:
        for rid in list(inst.streams):
            out = await worker.device.call(engine.abort_request, rid)
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
    await worker.unload_instance(instance_id)
    logger.info(
        "evicted instance={} node={} requests_handed_back={}", instance_id, worker.node_id, moved
    )
    return moved
