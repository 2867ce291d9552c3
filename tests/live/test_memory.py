"""The memory service, live (issue 6): real etcd, real gRPC, real KV pools of a tiny model.

A memory-limited CPU node (about a megabyte or two) hosts two instances of a tiny random
Llama: one grows, its scale-up is deferred until the neighbour's decrease has completed on
the worker, then applied; the worker's measured bytes never exceed the node's limit; stale
and conflicting revisions are refused with a status naming them; the watermark keeps resizes
few (test_memory_watermark.py); a request that can never fit is refused at once.

Every limit is derived from the model's footprint as the workers load it here (weights and
KV bytes per token measured in the engine's dtype: bf16 halves both), never a constant
(`tiny` and `limit` in tests/live/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

import grpc
import pytest
import pytest_asyncio

from slinfer.client import SlinferError
from slinfer.policy.ledger import LedgerOp
from slinfer.services.common.convert import WEIGHTS_TO_PB
from slinfer.services.common.engine_types import WeightFormat
from slinfer.services.common.etcd_process import start_etcd
from slinfer.services.common.security import INSECURE
from slinfer.services.inprocess import LiveStack
from slinfer.services.memory.client import MemoryClient
from slinfer.services.scheduler.dispatch_config import LIVE_POLICY, DispatchConfig
from slinfer.v1 import common_pb2, memory_pb2, memory_pb2_grpc, worker_pb2, worker_pb2_grpc
from tests.live.support import hold_iterations
from tests.live.waits import wait_until

pytestmark = [
    pytest.mark.live,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.usefixtures("torch_engine_default"),  # tests/live/conftest.py
]


async def _sample_peak(stack: LiveStack, samples: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.extend(w.memory.used_bytes() for w in stack.workers)
        await asyncio.sleep(0.005)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def stack(etcd, tiny_models, profile_dir, limit):
    s = await LiveStack.start(
        etcd.endpoint,
        workers=[
            {
                "node_id": "mem-0",
                "memory_bytes": limit,
                "num_threads": 1,
                "profile_dir": profile_dir,
            }
        ],
    )
    yield s
    await s.stop()


async def _drain(stream) -> worker_pb2.SubmitResponse:  # noqa: ANN001
    last = None
    while (resp := await stream.read()) is not grpc.aio.EOF:
        last = resp
    assert last is not None
    return last


async def _watch_pairs(worker, pairs: set, stop: asyncio.Event) -> None:  # noqa: ANN001
    """(grow, shrink) KV capacities as the worker has them, sampled."""
    while not stop.is_set():
        grow, shrink = worker.instances.get("grow"), worker.instances.get("shrink")
        if grow and shrink and grow.stats and shrink.stats:
            pairs.add((grow.stats.kv_capacity_tokens, shrink.stats.kv_capacity_tokens))
        await asyncio.sleep(0.002)


async def test_deferred_scale_up_waits_for_neighbour_decrease(
    stack, tiny_models, tiny, limit, plain_weights
):
    LIMIT, BPT = limit, tiny.kv_bytes_per_token  # noqa: N806
    worker = stack.workers[0]
    samples: list[int] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_peak(stack, samples, stop))
    channel = grpc.aio.insecure_channel(worker.address)
    stub = worker_pb2_grpc.WorkerStub(channel)
    path = str(tiny_models["llama"])
    memory = MemoryClient(worker.store)
    # Deployed, so the scheduler's keep-alive leaves the instances loaded by hand alone.
    await stack.c.deploy("tiny", path, keep_alive_s=600.0, weights=plain_weights)
    holds = contextlib.ExitStack()
    try:
        for iid, tokens in (("grow", 1024), ("shrink", 2048)):
            await stub.LoadInstance(
                worker_pb2.LoadInstanceRequest(
                    instance_id=iid,
                    model_id="tiny",
                    path=path,
                    kv_capacity_tokens=tokens,
                    weights=WEIGHTS_TO_PB[WeightFormat(plain_weights)],
                ),
                timeout=300,
            )
        pairs: set[tuple[int, int]] = set()
        watcher = asyncio.create_task(_watch_pairs(worker, pairs, stop))
        book = await memory.ledger("mem-0")
        assert book.capacity_bytes == LIMIT
        assert book.actual_bytes == worker.memory.used_bytes()  # plans corrected to measured
        free = LIMIT - book.planned_bytes
        assert 0 < free < 1024 * BPT  # the growth below cannot fit without a release

        # The neighbour runs a long request: 600+ context tokens stay in its pool while it decodes.
        submit = worker_pb2.SubmitRequest(
            instance_id="shrink",
            request_id="long",
            prompt_token_ids=[5] * 600,
            sampling=common_pb2.SamplingParams(max_tokens=1000, ignore_eos=True),
        )
        stream = stub.Submit(submit)
        first = await stream.read()  # prefilled: its blocks are held
        assert first.token_ids
        drained = asyncio.create_task(_drain(stream))
        # The request stays in flight (its 600+ tokens held) until the deferral is checked.
        holds.enter_context(hold_iterations(worker.instances["shrink"].engine))

        # Its decrease is approved at once (planned), but cannot complete while the request
        # holds 600 tokens: the memory still counts as actual.
        shrink_rev = await memory.revision("mem-0", "shrink")
        shrink = await memory.change(
            "mem-0", "shrink", LedgerOp.KV_RESIZE, kv_bytes=256 * BPT, revision=shrink_rev
        )
        assert shrink.status == memory_pb2.LEDGER_STATUS_APPLIED
        # So the growth fits the plan but not the actual footprint: deferred.
        rev = await memory.revision("mem-0", "grow")
        grow = await memory.change(
            "mem-0", "grow", LedgerOp.KV_RESIZE, kv_bytes=2048 * BPT, revision=rev
        )
        assert grow.status == memory_pb2.LEDGER_STATUS_DEFERRED, grow
        assert not drained.done()
        assert worker.instances["grow"].stats.kv_capacity_tokens == 1024
        assert worker.instances["shrink"].stats.kv_capacity_tokens == 2048
        assert list((await memory.ledger("mem-0")).deferred) == ["grow"]

        # A stale revision is refused, naming the revision the ledger is at.
        with pytest.raises(grpc.aio.AioRpcError) as stale:
            await memory.change("mem-0", "grow", LedgerOp.KV_RESIZE, kv_bytes=0, revision=rev)
        assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"stale revision {rev} for instance grow" in stale.value.details()
        assert f"at revision {grow.revision}" in stale.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as conflict:
            await memory.change(
                "mem-0", "grow", LedgerOp.KV_RESIZE, kv_bytes=0, revision=grow.revision + 5
            )
        assert conflict.value.code() == grpc.StatusCode.ABORTED
        assert "conflicting revision" in conflict.value.details()

        # The request ends, the worker completes the decrease, then the growth goes through.
        holds.close()
        last = await drained
        assert last.finished and last.completion_tokens == 1000
        await wait_until(
            lambda: worker.instances["grow"].stats.kv_capacity_tokens == 2048,
            what="the deferred growth applied",
        )
        assert worker.instances["shrink"].stats.kv_capacity_tokens == 256
        # Never both at once: the growth was applied only after the decrease.
        assert (2048, 2048) not in pairs

        # The worker reports completion just after resizing: wait for the ledger to hear it.
        async def settled():
            book = await memory.ledger("mem-0")
            return book if not book.actions else None

        book = await wait_until(settled, what="the ledger to hear the completion")
        assert list(book.deferred) == [] and list(book.actions) == []
        assert book.actual_bytes == book.planned_bytes
        assert book.reported_bytes == worker.memory.used_bytes()
        # Stats: measured bytes beside the ledger's estimate.
        await wait_until(
            lambda: worker.stats().node.memory_ledger_bytes == book.actual_bytes,
            what="the worker's stats to show the ledger's bytes",
        )
        assert worker.stats().node.memory_used_bytes == worker.memory.used_bytes() <= LIMIT

        # An idempotent retry: the same request id gets the same answer, no new revision.
        change = memory_pb2.InstanceChange(
            node_id="mem-0", instance_id="shrink", request_id="retry-1", revision=shrink.revision
        )
        req = memory_pb2.ScaleKVRequest(change=change, kv_bytes=512 * BPT)
        first = await memory._call("ScaleKV", req)
        again = await memory._call("ScaleKV", req)
        assert first.status == again.status == memory_pb2.LEDGER_STATUS_APPLIED
        assert first.revision == again.revision == shrink.revision + 1
    finally:
        holds.close()
        for iid in ("grow", "shrink"):
            if iid in worker.instances:
                await worker.unload_instance(iid)
        stop.set()
        await sampler
        if "watcher" in locals():
            await watcher
        await channel.close()
        await memory.close()
    # Every unload released through the ledger.
    book = await MemoryClient(worker.store).ledger("mem-0")
    assert book.planned_bytes == 0 and book.actual_bytes == 0 and not book.instances
    assert samples and max(samples) <= LIMIT
    assert worker.memory.counters.peak_measured_bytes <= LIMIT
    assert worker.memory.counters.resizes >= 2


async def test_request_that_can_never_fit_is_refused(tiny_models, profile_dir, tiny, plain_weights):
    tight = tiny.bytes(1600)  # weights + 1.6 k KV tokens at most
    etcd = start_etcd()  # its own cluster: the module's 3 MB node must not be a candidate
    s = await LiveStack.start(
        etcd.endpoint,
        workers=[
            {"node_id": "tight-0", "memory_bytes": tight, "num_threads": 1,
             "profile_dir": profile_dir}
        ],
        dispatch=DispatchConfig(
            default_kv_capacity_tokens=256, policy=replace(LIVE_POLICY, l_min_tokens=32)
        ),
    )  # fmt: skip
    try:
        await s.c.deploy(
            "tiny-fit", str(tiny_models["llama"]), ttft_slo_s=60.0, tpot_slo_s=5.0,
            weights=plain_weights,
        )  # fmt: skip

        # 1000 + 1000 tokens are within the model's context (2048) but their KV plus the
        # weights exceed the only node: refused at once (not after the 60 s TTFT SLO), from
        # the node's estimate before any instance exists and from measured figures after.
        async def refused() -> SlinferError:
            with pytest.raises(SlinferError) as err:
                async for _ in s.c.generate(
                    "tiny-fit", prompt_token_ids=[5] * 1000, max_tokens=1000, ignore_eos=True
                ):
                    pass
            return err.value

        before = s.workers[0].stats().node.instances
        err = await refused()
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "can never fit" in err.message and "tight" not in err.message
        assert "largest node offers" in err.message
        assert s.workers[0].stats().node.instances == before == 0, "nothing was loaded for it"
        # A request that fits is served on the same node; then its instance's measured
        # figures refuse the large one again.
        result = await s.c.complete(
            "tiny-fit", prompt_token_ids=[5] * 24, max_tokens=8, ignore_eos=True
        )
        assert result.completion.completion_tokens == 8
        err = await refused()
        assert err.code == grpc.StatusCode.FAILED_PRECONDITION and "can never fit" in err.message
        assert s.workers[0].memory.counters.peak_measured_bytes <= tight
    finally:
        await s.stop()
        etcd.stop()


async def test_two_replicas_racing_never_oversubscribe(stack, limit):
    """Forty loads of a tenth of the node race through two memory-service replicas: the etcd
    transactions let exactly as many through as fit."""
    LIMIT, size = limit, limit // 10  # noqa: N806
    from slinfer.services.memory.server import create as create_memory

    second = create_memory(stack.etcd, security=INSECURE)
    await second.start()
    first_addr = next(o.address for o in stack.others if o.kind == "memory")
    channels = [grpc.aio.insecure_channel(a) for a in (first_addr, second.address)]
    stubs = [memory_pb2_grpc.MemoryStub(c) for c in channels]
    try:

        async def load(i: int) -> memory_pb2.LedgerResponse:
            change = memory_pb2.InstanceChange(
                node_id="mem-0", instance_id=f"race-{i}", request_id=f"race-{i}", revision=0
            )
            req = memory_pb2.LoadWeightsRequest(change=change, weights_bytes=size)
            return await stubs[i % 2].LoadWeights(req, timeout=60)

        answers = await asyncio.gather(*(load(i) for i in range(40)))
        applied = [i for i, a in enumerate(answers) if a.status == memory_pb2.LEDGER_STATUS_APPLIED]
        rejected = [a for a in answers if a.status == memory_pb2.LEDGER_STATUS_REJECTED]
        book = await stubs[0].GetLedger(memory_pb2.GetLedgerRequest(node_id="mem-0"))
        assert book.planned_bytes <= LIMIT and book.actual_bytes <= LIMIT
        assert len(applied) == LIMIT // size == 10  # whatever the interleaving
        assert len(rejected) == 40 - len(applied)
        assert book.planned_bytes == size * len(applied)
        assert "would plan more than node mem-0" in rejected[0].message
        for i in applied:  # leave the node empty for the other tests
            change = memory_pb2.InstanceChange(
                node_id="mem-0", instance_id=f"race-{i}", request_id=f"evict-{i}", revision=1
            )
            ev = await stubs[1].Evict(change, timeout=60)
            await stubs[0].ReportCompletion(
                memory_pb2.CompletionReport(
                    node_id="mem-0", instance_id=f"race-{i}", revision=ev.revision
                ),
                timeout=60,
            )
        book = await stubs[0].GetLedger(memory_pb2.GetLedgerRequest(node_id="mem-0"))
        assert book.planned_bytes == 0 and not book.instances
    finally:
        for c in channels:
            await c.close()
        await second.stop()
