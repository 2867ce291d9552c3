"""Request hygiene and fault isolation, live (docs/RELIABILITY.md).

- A client's cancel or deadline frees the request's slot and KV on its worker at once: with
  the instance's iterations held, not one more iteration runs before they are free.
- An engine failure one request causes fails that request alone: its batch mates finish, it
  is not retried elsewhere, no instance is started for it.
- An instance whose engine breaks ends its streams with an error and is unloaded; nothing is
  retried, and churn is bounded.
- Deterministic requests give the same text alone, batched with others, and across a
  preemption.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
import pytest_asyncio

from slinfer import AsyncClient, Chunk, SlinferError
from slinfer.services.inprocess import LiveStack
from slinfer.v1 import consolidator_pb2, consolidator_pb2_grpc
from tests.live.support import hold_iterations, wipe
from tests.live.waits import wait_until

pytestmark = [pytest.mark.live, pytest.mark.asyncio(loop_scope="session")]

SLO = {"ttft_slo_s": 30.0, "tpot_slo_s": 5.0}
# Engine faults are injected into the PyTorch engine's forward pass, and deterministic
# decoding is its guarantee (docs/RELIABILITY.md): the models here run on it.
DEPLOY = {**SLO, "engine": "torch"}
DET = {"temperature": 0, "ignore_eos": True, "deterministic": True}


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def stack(etcd, tiny_models, profile_dir):
    s = await LiveStack.start(
        etcd.endpoint,
        workers=[
            {"node_id": f"cpu-{i}", "memory_bytes": 1 << 30, "num_threads": 1,
             "profile_dir": profile_dir}
            for i in range(2)
        ],  # fmt: skip
    )
    for name in ("m", "f", "g"):
        await s.c.deploy(name, str(tiny_models["llama"]), **DEPLOY)
    yield s
    await s.stop()
    await wipe(etcd.endpoint)


def _instance(stack: LiveStack, model: str):
    for w in stack.workers:
        for inst in w.instances.values():
            if inst.model_id == model:
                return inst
    return None


async def _between_iterations(stack: LiveStack, inst) -> None:
    """Wait out an iteration the device thread may be running (its executor is serial)."""
    worker = next(w for w in stack.workers if inst.instance_id in w.instances)
    await worker.device.call(lambda: None)


def _freed(inst) -> bool:
    s = inst.engine.stats()
    return not inst.streams and s.running == 0 and s.waiting == 0 and s.kv_used_tokens == 0


async def test_cancel_frees_slot_and_kv_without_another_iteration(stack: LiveStack) -> None:
    await stack.c.complete("m", "warm", max_tokens=2)
    inst = _instance(stack, "m")
    chunks: list[Chunk] = []

    async def consume() -> None:
        async for ev in stack.c.generate("m", "long one", max_tokens=500, **DET):
            chunks.append(ev)

    task = asyncio.create_task(consume())
    await wait_until(lambda: chunks, what="the first chunk")
    with hold_iterations(inst.engine):
        await _between_iterations(stack, inst)
        iterations = inst.engine.stats().iterations
        assert inst.engine.stats().kv_used_tokens > 0
        task.cancel()  # the client goes away
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_until(lambda: _freed(inst), timeout_s=10, what="slot and KV freed")
        assert inst.engine.stats().iterations == iterations, "freed between two iterations"
        # The status the gateway reports says so at once, too.
        status = await stack.c.status()
        row = next(i for i in status.instances if i.instance_id == inst.instance_id)
        assert row.running == 0 and row.waiting == 0 and row.kv_used_tokens == 0


async def test_deadline_frees_slot_and_kv(stack: LiveStack) -> None:
    inst = _instance(stack, "m")
    client = AsyncClient(stack.scheduler.address, stream_timeout_s=1.5, retries=1)
    with hold_iterations(inst.engine):
        with pytest.raises(SlinferError) as info:
            await client.complete("m", "never ends", max_tokens=500, **DET)
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        await wait_until(lambda: _freed(inst), timeout_s=10, what="slot and KV freed")
    await client.close()


def _poison(engine, marker: str):
    """White-box fault: the logits of requests whose id contains `marker` turn NaN."""
    original = engine._forward

    def forward(batch, pool):  # noqa: ANN001, ANN202
        logits = original(batch, pool).clone()
        for row, seq in enumerate(batch):
            if f":{marker}:" in seq.request_id and seq.num_completion >= 3:
                logits[row] = float("nan")
        return logits

    engine._forward = forward
    return lambda: delattr(engine, "_forward")


async def test_engine_failure_fails_that_request_alone(stack: LiveStack) -> None:
    await stack.c.complete("f", "warm", max_tokens=2)
    inst = _instance(stack, "f")
    restore = _poison(inst.engine, "victim")
    instances_before = len(stack.scheduler.watcher.view.instances_of("f"))
    try:
        neighbours = [
            asyncio.create_task(stack.c.complete("f", f"n{i}", max_tokens=40, **DET))
            for i in range(3)
        ]
        with pytest.raises(SlinferError) as info:
            await stack.c.complete("f", "poisoned", max_tokens=40, request_id="victim", **DET)
        assert info.value.code == grpc.StatusCode.INTERNAL
        assert "engine failed on this request" in info.value.message
        assert "non-finite" in info.value.message and "not retried" in info.value.message
        for result in await asyncio.gather(*neighbours):
            assert result.completion.completion_tokens == 40
    finally:
        restore()
    # The instance lives on, no other was started, and it still serves.
    assert _instance(stack, "f") is inst
    assert len(stack.scheduler.watcher.view.instances_of("f")) == instances_before
    assert (await stack.c.complete("f", "after", max_tokens=3)).completion.completion_tokens == 3


async def test_broken_instance_is_unloaded_not_retried(stack: LiveStack) -> None:
    await stack.c.complete("g", "warm", max_tokens=2)
    inst = _instance(stack, "g")
    from slinfer.services.scheduler import metrics

    loads = metrics.COLD_STARTS.labels("g")._value.get()

    def broken_step():  # noqa: ANN202
        raise RuntimeError("the engine is broken")

    inst.engine.step = broken_step
    with pytest.raises(SlinferError) as info:
        await stack.c.complete("g", "x", max_tokens=10, **DET)
    assert info.value.code == grpc.StatusCode.INTERNAL
    assert "the engine is broken" in info.value.message
    view = stack.scheduler.watcher.view
    await wait_until(lambda: inst.instance_id not in view.instances, what="the broken unloaded")
    assert metrics.COLD_STARTS.labels("g")._value.get() == loads, "the request was not retried"
    # A new request gets a new instance: one load, not a storm.
    assert (await stack.c.complete("g", "y", max_tokens=3)).completion.completion_tokens == 3
    assert metrics.COLD_STARTS.labels("g")._value.get() == loads + 1


async def test_deterministic_text_alone_batched_and_preempted(stack: LiveStack) -> None:
    ask = {"max_tokens": 80, **DET}
    alone = (await stack.c.complete("m", "The quiet harbour", **ask)).text
    others = [
        asyncio.create_task(stack.c.complete("m", f"other prompt {i}", max_tokens=60,
                                             temperature=0.8, ignore_eos=True))
        for i in range(3)
    ]  # fmt: skip
    batched = await stack.c.complete("m", "The quiet harbour", **ask)
    await asyncio.gather(*others)
    assert batched.text == alone
    # Preempted mid-stream: re-dispatched with its tokens, recomputed token by token.
    chunks: list[Chunk] = []

    async def consume() -> str:
        async for ev in stack.c.generate("m", "The quiet harbour", **ask):
            if isinstance(ev, Chunk):
                chunks.append(ev)
        return "".join(c.text for c in chunks)

    task = asyncio.create_task(consume())
    await wait_until(lambda: len(chunks) >= 5, what="the first chunks")
    inst = _instance(stack, "m")
    svc = stack.others[1]
    stub = consolidator_pb2_grpc.ConsolidatorStub(_channel(svc))
    with hold_iterations(inst.engine):
        plan = await stub.Preempt(
            consolidator_pb2.PreemptRequest(instance_id=inst.instance_id), timeout=60
        )
    assert plan.executed and plan.requests_moved == 1
    assert await task == alone


def _channel(svc):  # noqa: ANN001, ANN202
    return grpc.aio.insecure_channel(svc.address)


async def test_memory_service_crash_loads_against_measured_memory(stack: LiveStack, tiny_models):
    """A memory service that stops answering (its registration not yet expired) is treated as
    absent: a cold start is checked against the node's measured memory and goes ahead, and
    streams under way are not affected."""
    memory = stack.others[0]
    memory.registration._task.cancel()  # a crash: the lease is not revoked
    await memory.server.stop(0)
    try:
        await stack.c.deploy("after-memory", str(tiny_models["llama"]), **DEPLOY)
        result = await stack.c.complete("after-memory", "hello", max_tokens=3)
        assert result.completion.completion_tokens == 3
        assert result.completion.load_s > 0, "a cold start ran without the memory service"
    finally:
        await stack.c.delete("after-memory")


async def test_etcd_unreachable_is_unavailable_not_a_hang(stack: LiveStack, etcd, tiny_models):
    """While etcd does not answer, calls that must write it fail UNAVAILABLE within seconds,
    and a warm model keeps serving: etcd is not on a stream's path. A write sent before the
    timeout may still land when etcd answers again (the message says so): afterwards the model
    is either absent or deployed exactly as asked, never half-written."""
    import os
    import signal
    import time

    await stack.c.complete("m", "warm", max_tokens=2)
    client = AsyncClient(stack.scheduler.address, retries=1)
    os.kill(etcd.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(SlinferError) as info:
            await client.deploy("while-etcd-away", str(tiny_models["llama"]))
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        assert "etcd" in info.value.message and "retry" in info.value.message
        assert time.monotonic() - t0 < 15, "answered within seconds, not a hang"
        result = await client.complete("m", "still streaming", max_tokens=8, **DET)
        assert result.completion.completion_tokens == 8
    finally:
        os.kill(etcd.proc.pid, signal.SIGCONT)
    await client.close()
    assert "may still be applied" in info.value.message
    models = {m.model_id: m for m in await stack.c.models()}
    if "while-etcd-away" in models:
        assert models["while-etcd-away"].path == str(tiny_models["llama"].resolve())
        await stack.c.delete("while-etcd-away")


async def test_no_capacity_now_is_resource_exhausted_with_a_retry_hint(tiny_models, profile_dir):
    """Room for one instance, not two: a request for a second model waits for capacity
    within its TTFT SLO, then is refused RESOURCE_EXHAUSTED with a retry hint (it could run
    on this cluster, unlike "can never run", which is FAILED_PRECONDITION at once)."""
    from slinfer.services.common.etcd_process import start_etcd
    from tests.live.support import measure_footprint

    kv = 60_000
    node_bytes = int(measure_footprint(tiny_models["llama"]).bytes(kv) * 1.6)
    etcd = start_etcd()
    s = await LiveStack.start(
        etcd.endpoint,
        workers=[{"node_id": "one", "memory_bytes": node_bytes, "profile_dir": profile_dir}],
    )
    try:
        await s.others[0].stop()  # no memory service: KV pools keep their size
        await s.scheduler.watcher.wait_for(lambda v: not s.scheduler.dispatcher.kv.enabled, 30)
        await s.c.deploy("first", str(tiny_models["llama"]), kv_capacity_tokens=kv, **DEPLOY)
        await s.c.deploy("second", str(tiny_models["llama"]), kv_capacity_tokens=kv,
                         ttft_slo_s=1.0, tpot_slo_s=5.0)  # fmt: skip
        assert (await s.c.complete("first", "hi", max_tokens=2)).completion.completion_tokens
        with pytest.raises(SlinferError) as info:
            await s.c.complete("second", "hi", max_tokens=2)
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "no capacity" in info.value.message and "retry" in info.value.message
        assert info.value.retry_after_s is not None and info.value.retry_after_s >= 1.0
        # Once the first model is gone, the second runs.
        await s.c.delete("first")
        assert (await s.c.complete("second", "hi", max_tokens=2)).completion.completion_tokens
    finally:
        s.others = s.others[1:]
        await s.stop()
        etcd.stop()
