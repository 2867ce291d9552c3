"""Relay a request's stream from its worker to its client, re-dispatching losslessly.

The request is admitted (admission.py) and submitted to its instance's worker with its
deadlines (the one way they reach the worker). Each worker response is passed on once (the
client never sees a token twice: redispatch.StreamProgress). Two things end a submission
without ending the request, and both are re-dispatched with every token the client has
(recompute) to continue the same stream:

- the worker ends it with FINISH_REASON_PREEMPTED (an eviction: preemption, drain);
- the stream breaks (the worker died or became unreachable): its node is marked suspect at
  once (cluster/suspects.py), so nothing new goes there, long before its etcd lease expires.

An instance that refuses before answering (full, draining, gone) is decided again, bounded by
the admission deadline. A request the engine failed on (FINISH_REASON_ERROR) ends with an
error and is never retried elsewhere. Whatever ends the stream, the request leaves the
tracker, its instance's budget and KV are re-evaluated, and an unfinished request is aborted
on its worker so its KV is freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from loguru import logger

from slinfer.services.cluster.suspects import Suspects
from slinfer.services.cluster.tracker import LiveRequest, Tracker
from slinfer.services.cluster.workers import WorkerClients
from slinfer.services.common.convert import sampling_to_pb
from slinfer.services.common.engine_types import SamplingParams
from slinfer.services.common.errors import RequestFailed, WorkerUnavailable
from slinfer.services.common.records import ModelRecord
from slinfer.services.scheduler import metrics
from slinfer.services.scheduler.admission import Admission, Placement
from slinfer.services.scheduler.cold_start import ColdStarts
from slinfer.services.scheduler.dispatch_config import DispatchConfig
from slinfer.services.scheduler.kv_scaler import KvScaler
from slinfer.services.scheduler.redispatch import StreamProgress
from slinfer.v1 import common_pb2, worker_pb2

# Submit refusals worth deciding again for: full, draining/unloading, or already gone.
_REFUSED = (
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
)
# A stream that breaks with these lost its worker (or the way to it).
_BROKEN = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN)
_MAX_REFUSALS = 20
_MAX_FAILOVERS = 8


class Ended(enum.Enum):
    FINISHED = "finished"
    PREEMPTED = "preempted"  # evicted: re-dispatch with the tokens so far
    LOST = "lost"  # the worker's stream broke: suspect the node, re-dispatch
    REFUSED = "refused"  # refused before answering: decide again


class Relay:
    def __init__(
        self,
        admission: Admission,
        workers: WorkerClients,
        tracker: Tracker,
        cold: ColdStarts,
        kv: KvScaler,
        config: DispatchConfig,
        on_change: Callable[[str], None],
        suspects: Suspects,
    ) -> None:
        self.admission, self.workers, self.tracker, self.cold, self.kv = (
            admission, workers, tracker, cold, kv,
        )  # fmt: skip
        self.config = config
        self.on_change = on_change
        self.suspects = suspects
        self._aborts: set[asyncio.Task[None]] = set()

    async def generate(
        self,
        model: ModelRecord,
        req: LiveRequest,
        prompt_ids: list[int],
        sampling: SamplingParams,
        resumed: tuple[int, ...] = (),
    ) -> AsyncIterator[tuple[Placement, worker_pb2.SubmitResponse]]:
        """Stream a request's worker responses to the end, across re-dispatches. `resumed`:
        the tokens a client already has (a `resume` after its gateway replica died)."""
        submit = worker_pb2.SubmitRequest(
            request_id=req.request_id,
            prompt_token_ids=prompt_ids,
            sampling=sampling_to_pb(sampling),
        )
        progress = StreamProgress(token_ids=list(resumed))
        if resumed:
            self._resume(req, submit, progress, None, "resumed by its client")
        refusals = failovers = 0
        try:
            while True:
                placement = await self.admission.admit(model, req)
                ended: list[Ended] = []
                stream = self._stream(placement, submit, req, progress, ended)
                async with contextlib.aclosing(stream):
                    async for out in stream:
                        yield placement, out
                how = ended[0] if ended else Ended.REFUSED
                if how is Ended.FINISHED:
                    return
                if how is Ended.REFUSED:  # decide again, bounded
                    refusals += 1
                    if refusals > _MAX_REFUSALS:
                        raise WorkerUnavailable(
                            f"instances of {model.model_id} kept refusing the request; "
                            "retry later"
                        )
                    await asyncio.sleep(self.admission.policy.retry_interval_s)
                else:
                    failovers += how is Ended.LOST
                    if failovers > _MAX_FAILOVERS:
                        raise WorkerUnavailable(
                            f"the request lost its worker {failovers} times; retry later"
                        )
                    self._resume(req, submit, progress, placement.node_id, how.value)
                self.tracker.detach(req)
                self.on_change(placement.instance_id)
        finally:
            iid_left = self.tracker.detach(req)
            if iid_left is not None:
                self.on_change(iid_left)
                self.kv.touch(iid_left)  # a request left: the KV may shrink
            async with self.admission.watcher.changed:
                self.admission.watcher.changed.notify_all()

    async def _stream(
        self,
        placement: Placement,
        submit: worker_pb2.SubmitRequest,
        req: LiveRequest,
        progress: StreamProgress,
        ended: list[Ended],
    ) -> AsyncIterator[worker_pb2.SubmitResponse]:
        """One submission: yields what the client has not seen; appends how it ended
        (nothing: the instance refused before answering)."""
        iid = placement.instance_id
        submit.instance_id = iid
        submit.deadline.CopyFrom(
            worker_pb2.RequestDeadline(
                arrival_unix_s=req.arrival_s,
                ttft_slo_s=req.ttft_slo_s,
                tpot_slo_s=req.tpot_slo_s,
                excused_s=req.excused_s,
            )
        )
        stub = self.workers.stub(placement.address)
        call = stub.Submit(submit)
        req.submitted_at_s = req.submitted_at_s or time.time()
        self.cold.last_used[iid] = time.monotonic()
        answered = refused = False
        try:
            async for resp in call:
                answered = True
                if resp.finish_reason == common_pb2.FINISH_REASON_PREEMPTED:
                    ended.append(Ended.PREEMPTED)
                    return
                if resp.finish_reason == common_pb2.FINISH_REASON_ERROR:
                    ended.append(Ended.FINISHED)
                    raise RequestFailed(
                        f"the engine failed on this request ({resp.error or 'no detail'}); it "
                        "was ended and not retried, other requests were not affected"
                    )
                out = progress.accept(resp)
                if out is None:
                    continue
                if out.token_ids:
                    if req.first_token_at is None:
                        req.first_token_at = time.monotonic()
                        if req.resumed_at_s is None:  # what admission aimed at: SloGuard
                            ttft = time.time() - req.arrival_s - req.excused_s
                            self.admission.guard.first_token(ttft, req.ttft_slo_s)
                    first = req.output_tokens == 0
                    req.output_tokens += len(out.token_ids)
                    if first:
                        self.on_change(iid)  # its prefill is done: budgets change
                    self.kv.touch(iid)
                if out.finished:
                    ended.append(Ended.FINISHED)
                    progress.finished = True
                yield out
                if out.finished:
                    self.tracker.completed(req.model_id, out.completion_tokens)
                    return
            self._lost(placement, req, "the worker closed the stream early")
            ended.append(Ended.LOST)
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code in _REFUSED and not answered:
                refused = True
                logger.info(
                    "instance {} refused request={} ({}); re-deciding", iid, req.request_id, details
                )
                return
            if code in _BROKEN:
                self._lost(placement, req, f"{code.name}: {details}")
                ended.append(Ended.LOST)
                return
            raise
        finally:
            self.cold.last_used[iid] = time.monotonic()
            how = ended[0] if ended else None
            if how is Ended.LOST:  # its worker is likely gone: free it there if not, later
                call.cancel()
                self._background_abort(stub, req.request_id, iid)
            elif how is None and not refused:  # cancelled, deadline, an error: free it now
                call.cancel()
                await self._abort(stub, req.request_id, iid)
            # FINISHED / PREEMPTED: the worker ended the request itself; refused: it never
            # held it.

    async def _abort(self, stub: Any, request_id: str, iid: str) -> None:
        """Free the request's slot and KV on its worker now (it may be gone: best effort)."""
        with contextlib.suppress(Exception):
            await asyncio.shield(
                stub.Abort(
                    worker_pb2.AbortRequest(request_id=request_id, instance_id=iid),
                    timeout=self.config.rpc_timeout_s,
                )
            )

    def _background_abort(self, stub: Any, request_id: str, iid: str) -> None:
        task = asyncio.get_running_loop().create_task(self._abort(stub, request_id, iid))
        self._aborts.add(task)
        task.add_done_callback(self._aborts.discard)

    def _lost(self, placement: Placement, req: LiveRequest, why: str) -> None:
        logger.warning(
            "stream of request={} broke on node {} ({}); re-dispatching it",
            req.request_id,
            placement.node_id,
            why,
        )
        self.suspects.mark(placement.node_id, why)

    def _resume(
        self,
        req: LiveRequest,
        submit: worker_pb2.SubmitRequest,
        progress: StreamProgress,
        node_id: str | None,
        why: str,
    ) -> None:
        """Prepare the re-dispatch of a stream: it resumes with every token the client has
        (redispatch.py says what that promises)."""
        resumed = progress.resume()
        req.output_tokens = len(resumed)
        del submit.resumed_token_ids[:]
        submit.resumed_token_ids.extend(resumed)
        req.resumed_at_s, req.preempted_from = time.time(), node_id
        metrics.REDISPATCHES.labels(req.model_id).inc()
        logger.info(
            "re-dispatching request={} ({}, from {}) after {} tokens",
            req.request_id,
            why,
            node_id or "its client",
            req.output_tokens,
        )
