"""One client request at the gateway: validate, tokenise, build its SLOs, stream it.

The text chunks carry the token ids they stand for, so a client whose stream broke (its
gateway replica died) can send them back in `resume`: the request is admitted again with
those tokens (recomputed, never re-sent) and the stream continues where it stopped, on any
replica (docs/RELIABILITY.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from slinfer.policy import SloPolicy
from slinfer.services.cluster.tracker import LiveRequest
from slinfer.services.common import keys
from slinfer.services.common.auth import Principal
from slinfer.services.common.convert import FINISH_FROM_PB, sampling_from_pb
from slinfer.services.common.engine_types import FinishReason
from slinfer.services.common.errors import InvalidArgument, ModelNotFound
from slinfer.services.common.records import ModelRecord
from slinfer.services.common.store import within
from slinfer.services.scheduler import models
from slinfer.services.scheduler.prompts import MAX_MESSAGES, Message
from slinfer.services.scheduler.registry import internal_id
from slinfer.services.scheduler.request_metrics import RequestClock
from slinfer.v1 import common_pb2, gateway_pb2, worker_pb2

if TYPE_CHECKING:
    from slinfer.services.scheduler.server import SchedulerService


async def find_model(s: SchedulerService, name: str, principal: Principal) -> ModelRecord:
    """The caller's model `name`; another tenant's is NOT_FOUND, as a missing one."""
    if not name:
        raise InvalidArgument("model is required (see ListModels)")
    model = s.watcher.view.models.get(name)
    if model is None and keys.valid_name(name):
        # Deployed through another replica a moment ago? Ask etcd, not the watch.
        entry = await within(s.store.get(keys.model(name)), 5.0, "the model's record")
        model = models.read_model(entry)
    if model is None or not principal.owns(model):
        raise ModelNotFound(f"model {name[:80]} is not deployed (see ListModels)")
    return model


def _resumed(request: gateway_pb2.GenerateRequest, vocab_size: int, max_tokens: int) -> list[int]:
    if not request.HasField("resume"):
        return []
    ids = list(request.resume.token_ids)
    bad = [t for t in ids if t < 0 or (vocab_size and t >= vocab_size)]
    if bad:
        raise InvalidArgument(f"resume.token_ids must be in [0, {vocab_size}); got {bad[:5]}")
    if len(ids) > max_tokens:
        raise InvalidArgument(
            f"resume carries {len(ids)} tokens, more than max_tokens={max_tokens}; send the "
            "token ids of the chunks received, unchanged"
        )
    return ids


async def generate(
    s: SchedulerService, request: gateway_pb2.GenerateRequest, rid: str, principal: Principal
) -> AsyncIterator[gateway_pb2.GenerateResponse]:
    arrival, arrival_wall = time.monotonic(), time.time()
    model = await find_model(s, request.model, principal)
    sampling = sampling_from_pb(request.sampling)
    if len(request.messages) > MAX_MESSAGES:
        raise InvalidArgument(f"at most {MAX_MESSAGES} messages, got {len(request.messages)}")
    messages = [Message(m.role, m.content) for m in request.messages]
    prompt_ids = await asyncio.to_thread(
        s.prompts.encode,
        model.path,
        request.prompt,
        messages,
        list(request.prompt_token_ids),
        model.vocab_size,
    )
    max_len = model.max_model_len
    if max_len and len(prompt_ids) + sampling.max_tokens > max_len:
        raise InvalidArgument(
            f"prompt ({len(prompt_ids)} tokens) + max_tokens ({sampling.max_tokens}) "
            f"exceeds the model's context of {max_len} tokens; shorten the prompt or "
            "lower max_tokens"
        )
    resumed = _resumed(request, model.vocab_size, sampling.max_tokens)
    if resumed and len(resumed) >= sampling.max_tokens:
        # The stream broke between its last chunk and its final message: nothing is left.
        yield _final(rid, common_pb2.FINISH_REASON_LENGTH, len(prompt_ids), len(resumed))
        return
    slo = SloPolicy(tpot_s=model.tpot_slo_s or s.config.default_tpot_slo_s)
    live = LiveRequest(
        request_id=internal_id(principal.tenant, rid),
        model_id=model.model_id,
        arrival_s=arrival_wall,
        input_tokens=len(prompt_ids),
        ttft_slo_s=model.ttft_slo_s or slo.ttft_s(len(prompt_ids)),
        tpot_slo_s=slo.tpot_s,
    )
    clock = RequestClock(model.model_id, arrival, s.active, prompt_tokens=len(prompt_ids))
    clock.start()
    final: worker_pb2.SubmitResponse | None = None
    placement = None
    # Tokens whose text the worker holds back (part of a character, a possible stop string)
    # ride with the chunk that carries their text, or with a last empty chunk: the chunks'
    # `token_ids` add up to completion_tokens, each token counted once.
    pending: list[int] = []
    try:
        stream = s.dispatcher.generate(model, live, prompt_ids, sampling, tuple(resumed))
        async with contextlib.aclosing(stream):
            async for placed, resp in stream:
                placement = placed
                clock.on_queued(
                    live.submitted_at_s - arrival_wall if live.submitted_at_s is not None else None
                )
                clock.on_tokens(len(resp.token_ids), time.monotonic())
                pending.extend(resp.token_ids)
                if resp.text or (resp.finished and pending):
                    yield gateway_pb2.GenerateResponse(
                        request_id=rid,
                        chunk=gateway_pb2.TextChunk(
                            text=resp.text, tokens=len(pending), token_ids=pending
                        ),
                    )
                    pending = []
                if resp.finished:
                    final = resp
        assert final is not None and placement is not None
        n = final.completion_tokens
        reason = FINISH_FROM_PB.get(final.finish_reason, FinishReason.STOP).value
        # A resumed request's TPOT is over the tokens this gateway produced.
        tpot = clock.finish(reason, n - len(resumed), time.monotonic())
        ttft = clock.first_at - arrival if clock.first_at is not None else 0.0
    finally:
        clock.close()
    yield gateway_pb2.GenerateResponse(
        request_id=rid,
        final=gateway_pb2.Completion(
            finish_reason=final.finish_reason,
            prompt_tokens=final.prompt_tokens or len(prompt_ids),
            completion_tokens=n,
            ttft_s=ttft,
            tpot_s=tpot,
            load_s=placement.load_s,
            instance_id=placement.instance_id,
            node_id=placement.node_id,
        ),
    )


def _final(rid: str, reason: int, prompt_tokens: int, completion_tokens: int) -> Any:
    return gateway_pb2.GenerateResponse(
        request_id=rid,
        final=gateway_pb2.Completion(
            finish_reason=reason,  # type: ignore[arg-type]
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        ),
    )
