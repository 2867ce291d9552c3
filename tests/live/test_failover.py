"""Lossless failover (docs/RELIABILITY.md): a worker or a gateway replica dies mid-stream and
the client's stream goes on, every token exactly once, and — for a deterministic request —
with the text of an uninterrupted run.

Streams are held mid-way by holding their instance's iterations (tests/live/support.py), so
"mid-stream" is certain on any CPU; a "crash" stops a service's gRPC server at once (its
connections reset) and, for a worker, stops renewing its etcd lease, as a dead process would.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
import pytest_asyncio

from slinfer import Chunk, Completion, SlinferError
from slinfer.services.inprocess import LiveStack
from slinfer.v1 import worker_pb2
from tests.live.support import hold_iterations, wipe
from tests.live.waits import wait_until

pytestmark = [pytest.mark.live, pytest.mark.asyncio(loop_scope="session")]

SLO = {"ttft_slo_s": 30.0, "tpot_slo_s": 5.0}
# Deterministic decoding (and so identical text across a failover) is the PyTorch engine's
# guarantee (docs/RELIABILITY.md): the models here run on it, whatever the CPU default.
DEPLOY = {**SLO, "engine": "torch"}
# Deterministic greedy decoding: the same text whatever else is batched and across a
# re-dispatch (on nodes of the same hardware label: both workers run one thread).
ASK = {"max_tokens": 96, "temperature": 0, "ignore_eos": True, "deterministic": True}
PROMPT = "The history of the river begins"


def _workers(profile_dir, ttl_s: int = 10) -> list[dict[str, object]]:
    return [
        {"node_id": f"cpu-{i}", "memory_bytes": 1 << 30, "num_threads": 1,
         "profile_dir": profile_dir, "lease_ttl_s": ttl_s}
        for i in range(2)
    ]  # fmt: skip


async def _stream(client, out: list, model: str = "m", prompt: str = PROMPT, **kw):
    text, ids, final = [], [], None
    async for ev in client.generate(model, prompt, **{**ASK, **kw}):
        if isinstance(ev, Chunk):
            text.append(ev.text)
            ids.extend(ev.token_ids)
            out.append(ev)
        elif isinstance(ev, Completion):
            final = ev
    assert final is not None
    return "".join(text), ids, final


def _engine_serving(stack: LiveStack, model: str = "m"):
    """(worker, engine) of the instance streaming a request of `model` now."""
    for w in stack.workers:
        for inst in w.instances.values():
            if inst.model_id == model and inst.streams:
                return w, inst.engine
    return None


async def crash_worker(worker) -> None:
    """What a killed worker process looks like from outside: its connections reset, its etcd
    lease is no longer renewed (its records stay until the lease expires)."""
    registration = worker.node.registration
    if registration is not None and registration._task is not None:
        registration._task.cancel()
    await worker.server.stop(0)


@pytest_asyncio.fixture(loop_scope="session")
async def two_workers(etcd, tiny_models, profile_dir):
    # A long lease: failover must not wait for it (it is detected from the broken stream).
    s = await LiveStack.start(etcd.endpoint, workers=_workers(profile_dir, ttl_s=60))
    await s.c.deploy("m", str(tiny_models["llama"]), **DEPLOY)
    yield s
    await s.stop()
    await wipe(etcd.endpoint)


async def test_worker_loss_mid_stream_is_lossless(two_workers: LiveStack) -> None:
    stack = two_workers
    reference, ref_ids, _ = await _stream(stack.c, [])
    chunks: list[Chunk] = []
    task = asyncio.create_task(_stream(stack.c, chunks))
    await wait_until(lambda: len(chunks) >= 8, what="the first chunks")
    victim, engine = await wait_until(lambda: _engine_serving(stack), what="the busy instance")
    with hold_iterations(engine):
        cut = sum(c.tokens for c in chunks)
        await crash_worker(victim)
    text, ids, final = await asyncio.wait_for(task, 60)
    # Continued on the other node, long before the dead node's lease would have said so.
    assert final.node_id != victim.node_id
    assert victim.node_id in stack.scheduler.watcher.view.nodes, "its lease has not expired"
    assert victim.node_id in stack.scheduler.watcher.view.suspects
    # Every token once, and the uninterrupted run's text (deterministic).
    assert 8 <= cut < ASK["max_tokens"]
    assert final.completion_tokens == len(ids) == ASK["max_tokens"]
    assert ids == ref_ids and text == reference
    # New requests go to the live node at once.
    again = await stack.c.complete("m", "after the crash", max_tokens=4, temperature=0)
    assert again.completion.node_id != victim.node_id


@pytest_asyncio.fixture(loop_scope="session")
async def two_gateways(etcd, tiny_models, profile_dir):
    s = await LiveStack.start(etcd.endpoint, workers=_workers(profile_dir)[:1], schedulers=2)
    await s.c.deploy("m", str(tiny_models["llama"]), **DEPLOY)
    yield s
    await s.stop()
    await wipe(etcd.endpoint)


async def test_gateway_loss_mid_stream_resumes_on_another_replica(two_gateways) -> None:
    stack = two_gateways
    reference, ref_ids, _ = await _stream(stack.c, [])
    client = stack.new_client()  # both replicas; the first answers
    chunks: list[Chunk] = []
    task = asyncio.create_task(_stream(client, chunks))
    await wait_until(lambda: len(chunks) >= 8, what="the first chunks")
    _w, engine = await wait_until(lambda: _engine_serving(stack), what="the busy instance")
    with hold_iterations(engine):
        await stack.scheduler.stop(grace_s=0)  # the replica streaming it dies
        # Its submission is released on the worker (the resumed one may have arrived).
        await wait_until(
            lambda: engine.stats().running + engine.stats().waiting <= 1,
            what="the dead replica's request aborted",
        )
    text, ids, final = await asyncio.wait_for(task, 60)
    assert final.completion_tokens == len(ids) == ASK["max_tokens"]
    assert ids == ref_ids and text == reference
    await client.close()


async def test_duplicate_and_keep_alive_across_replicas(etcd, tiny_models, profile_dir) -> None:
    """A request id streaming on one replica is refused on another (the original goes on);
    an instance one replica uses is never scaled to zero by another."""
    stack = await LiveStack.start(etcd.endpoint, workers=_workers(profile_dir)[:1], schedulers=2)
    try:
        await stack.c.deploy("k", str(tiny_models["llama"]), keep_alive_s=0.0, **DEPLOY)
        first, second = stack.scheduler, stack.replicas[0]
        from slinfer import AsyncClient

        a, b = AsyncClient(first.address), AsyncClient(second.address)
        chunks: list[Chunk] = []
        task = asyncio.create_task(_stream(a, chunks, model="k", request_id="shared"))
        await wait_until(lambda: chunks, what="the first chunk")
        _w, engine = await wait_until(lambda: _engine_serving(stack, "k"), what="busy")
        with hold_iterations(engine):
            with pytest.raises(SlinferError) as info:
                await b.complete("k", "dup", max_tokens=2, request_id="shared")
            assert info.value.code == grpc.StatusCode.ALREADY_EXISTS
            iid = next(iter(first.dispatcher.tracker.by_instance))
            # The other replica sees the instance busy through the first one's lease...
            await wait_until(lambda: second.dispatcher.tracker.busy(iid), what="the lease")
            assert iid not in await second.dispatcher.reclaim_idle(0.0, 1e12)
            # ...and the worker refuses a keep-alive unload of a busy instance anyway.
            node = second.watcher.view.nodes["cpu-0"]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await second.workers.stub(node.address).UnloadInstance(
                    worker_pb2.UnloadInstanceRequest(instance_id=iid, min_idle_s=1.0), timeout=10
                )
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        _text, ids, final = await task
        assert final.completion_tokens == len(ids) == ASK["max_tokens"]
        await a.close()
        await b.close()
    finally:
        await stack.stop()
        await wipe(etcd.endpoint)


async def test_blocking_client_resumes_too(two_gateways) -> None:
    """The blocking `Client` (a thread here) resumes a broken stream the same way."""
    from slinfer import Client

    stack = two_gateways
    _reference, ref_ids, _ = await _stream(stack.c, [])
    addresses = [stack.scheduler.address, stack.replicas[0].address]
    chunks: list[Chunk] = []

    def consume() -> list[int]:
        with Client(addresses) as client:
            ids: list[int] = []
            for ev in client.generate("m", PROMPT, **ASK):
                if isinstance(ev, Chunk):
                    chunks.append(ev)
                    ids.extend(ev.token_ids)
            return ids

    task = asyncio.create_task(asyncio.to_thread(consume))
    await wait_until(lambda: len(chunks) >= 8, what="the first chunks")
    _w, engine = await wait_until(lambda: _engine_serving(stack), what="the busy instance")
    with hold_iterations(engine):
        await stack.scheduler.stop(grace_s=0)
    assert await asyncio.wait_for(task, 60) == ref_ids
