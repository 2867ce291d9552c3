"""A request's stream on a worker: submit, relay each iteration's output, abort.

The request joins its instance's engine (through the memory agent, which waits for KV the
ledger has approved), and every output the device loop produces for it is relayed to the
scheduler's stream. A stream that ends without finishing (the client went away, an error)
aborts the request in the engine at once, so its KV is never leaked.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

from slinfer.services.common.convert import sampling_from_pb
from slinfer.services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InstanceNotFound,
    InvalidArgument,
)
from slinfer.services.common.records import InstanceState
from slinfer.services.worker import metrics
from slinfer.services.worker.arbiter import TrackedRequest
from slinfer.services.worker.engine.base import EngineRequest, RequestOutput
from slinfer.services.worker.memory_agent import MemoryAgent
from slinfer.services.worker.node import NodeContext
from slinfer.v1 import worker_pb2


class Requests:
    def __init__(self, node: NodeContext, memory: MemoryAgent) -> None:
        self.node = node
        self.memory = memory

    async def submit(self, req: worker_pb2.SubmitRequest) -> AsyncIterator[RequestOutput]:
        node = self.node
        inst = node.instances.get(req.instance_id)
        if inst is None:
            raise InstanceNotFound(f"no instance {req.instance_id} on node {node.node_id}")
        if inst.state is not InstanceState.READY or inst.engine is None:
            raise FailedPrecondition(
                f"instance {req.instance_id} is {inst.state.value}, not ready for requests"
            )
        rid = req.request_id or uuid.uuid4().hex
        if rid in inst.streams:
            raise AlreadyExists(f"request {rid} is already running on {req.instance_id}")
        if not req.prompt_token_ids:
            raise InvalidArgument("prompt_token_ids must not be empty")
        ereq = EngineRequest(
            request_id=rid,
            prompt_token_ids=tuple(req.prompt_token_ids),
            sampling=sampling_from_pb(req.sampling),
            resumed_token_ids=tuple(req.resumed_token_ids),
        )
        queue: asyncio.Queue[RequestOutput | None] = asyncio.Queue()
        inst.streams[rid] = queue
        inst.requests[rid] = TrackedRequest.from_submit(rid, req)
        finished = False
        status = "error"
        try:
            try:
                await self.memory.add_request(inst, ereq)
            except Exception:
                if not inst.error:  # "" until the device fails the instance
                    raise
                # The instance broke while the request was being added: its stream already
                # holds the FinishReason.ERROR output (device._fail_instance); deliver that,
                # so it ends as failed, not as a refusal the scheduler would retry elsewhere.
            node.device.wake()
            while True:
                out = await queue.get()
                if out is None:
                    raise FailedPrecondition(
                        f"instance {inst.instance_id} failed: {inst.error or 'unloaded'}"
                    )
                if out.finished:
                    finished = True
                    status = out.finish_reason.value if out.finish_reason else "stop"
                yield out
                if finished:
                    return
        except (asyncio.CancelledError, GeneratorExit):
            # The caller went away: its RPC was cancelled, or the stream closed at a yield.
            status = "cancelled"
            raise
        finally:
            inst.streams.pop(rid, None)
            inst.requests.pop(rid, None)
            if not inst.streams:
                inst.idle_since = time.monotonic()
            if not finished and inst.engine is not None:
                # Client gone, deadline passed or an error: free the request's slot and KV
                # now, between two iterations (never leak them), and show it at once.
                with contextlib.suppress(Exception):
                    await asyncio.shield(node.device.abort(inst, rid))
            metrics.REQUESTS.labels(inst.model_id, status).inc()

    async def abort(self, instance_id: str, request_id: str) -> bool:
        inst = self.node.instances.get(instance_id)
        if inst is None or inst.engine is None:
            return False
        out = await self.node.device.abort(inst, request_id)
        queue = inst.streams.get(request_id)
        if out is not None and queue is not None:
            queue.put_nowait(out)
        return out is not None
