"""Relay a request's stream from its worker to its client, re-dispatching losslessly.

The request is admitted (admission.py) and submitted to its instance's worker with its
deadlines (the one way they reach the worker). Each worker response is passed on once (the
client never sees a token twice: redispatch.StreamProgress). A stream the worker ends with
FINISH_REASON_PREEMPTED is admitted again elsewhere with the tokens so far (recompute), and
continues; an instance that refuses before answering (full, draining, gone) is decided again,
bounded by the admission deadline. Whatever ends the stream, the request leaves the
tracker, its instance's budget and KV are re-evaluated, and an unfinished request is aborted
on its worker so its KV is freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import grpc
from loguru import logger

from slinfer.services.cluster.tracker import LiveRequest, Tracker
from slinfer.services.cluster.workers import WorkerClients
from slinfer.services.common.convert import sampling_to_pb
from slinfer.services.common.engine_types import SamplingParams
from slinfer.services.common.errors import WorkerUnavailable
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
_MAX_REFUSALS = 20


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
    ) -> None:
        self.admission, self.workers, self.tracker, self.cold, self.kv = (
            admission, workers, tracker, cold, kv,
        )  # fmt: skip
        self.config = config
        self.on_change = on_change

    async def generate(
        self,
        model: ModelRecord,
        req: LiveRequest,
        prompt_ids: list[int],
        sampling: SamplingParams,
    ) -> AsyncIterator[tuple[Placement, worker_pb2.SubmitResponse]]:
        """Stream a request's worker responses to the end, across re-dispatches."""
        submit = worker_pb2.SubmitRequest(
            request_id=req.request_id,
            prompt_token_ids=prompt_ids,
            sampling=sampling_to_pb(sampling),
        )
        progress = StreamProgress()
        refusals = 0
        try:
            while True:
                placement = await self.admission.admit(model, req)
                outcome = self._stream(placement, submit, req, progress)
                async for out in outcome:
                    yield placement, out
                if progress.finished:
                    return
                if progress.preempted:
                    self._resume(req, submit, progress, placement.node_id)
                    progress.preempted = False
                else:  # refused before answering: decide again, bounded
                    refusals += 1
                    if refusals > _MAX_REFUSALS:
                        raise WorkerUnavailable(
                            f"instances of {model.model_id} kept refusing request "
                            f"{req.request_id}; retry later"
                        )
                    await asyncio.sleep(self.admission.policy.retry_interval_s)
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
    ) -> AsyncIterator[worker_pb2.SubmitResponse]:
        """One submission: yields what the client has not seen; sets progress.finished or
        progress.preempted, or returns quietly when the instance refused before answering."""
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
        ended = answered = False  # ended: the worker closed the request itself
        try:
            async for resp in call:
                answered = True
                if resp.finish_reason == common_pb2.FINISH_REASON_PREEMPTED:
                    ended = progress.preempted = True
                    return
                out = progress.accept(resp)
                if out is None:
                    continue
                if out.token_ids:
                    first = req.output_tokens == 0
                    req.output_tokens += len(out.token_ids)
                    if first:
                        self.on_change(iid)  # its prefill is done: budgets change
                    self.kv.touch(iid)
                ended = progress.finished = out.finished
                yield out
                if ended:
                    self.tracker.completed(req.model_id, out.completion_tokens)
                    return
            raise WorkerUnavailable(f"worker for {iid} closed the stream early")
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code in _REFUSED and not answered:
                logger.info(
                    "instance {} refused request={} ({}); re-deciding", iid, req.request_id, details
                )
                return
            if code == grpc.StatusCode.UNAVAILABLE:
                raise WorkerUnavailable(
                    f"worker at {placement.address} is unreachable: {details}"
                ) from exc
            raise
        finally:
            self.cold.last_used[iid] = time.monotonic()
            if not ended:
                call.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.shield(
                        stub.Abort(
                            worker_pb2.AbortRequest(request_id=req.request_id, instance_id=iid),
                            timeout=self.config.rpc_timeout_s,
                        )
                    )

    def _resume(
        self,
        req: LiveRequest,
        submit: worker_pb2.SubmitRequest,
        progress: StreamProgress,
        node_id: str,
    ) -> None:
        """Prepare the re-dispatch of a preempted stream: it resumes with every token the
        client has (redispatch.py says what that promises)."""
        resumed = progress.resume()
        req.output_tokens = len(resumed)
        del submit.resumed_token_ids[:]
        submit.resumed_token_ids.extend(resumed)
        req.resumed_at_s, req.preempted_from = time.time(), node_id
        metrics.REDISPATCHES.labels(req.model_id).inc()
        logger.info(
            "re-dispatching request={} preempted on {} after {} tokens",
            req.request_id,
            node_id,
            req.output_tokens,
        )
