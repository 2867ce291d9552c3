"""Consolidation, live (docs/CONSOLIDATION.md): preemption with lossless re-dispatch, drain.

Two CPU workers (one thread each) share etcd with a scheduler and a leader-elected
consolidator. The Qwen2 model's tables are seeded so that decode time grows with the batch
(50 ms per request per iteration, TPOT SLO 0.2 s): one request takes 29 % of a device, so the
decode budget, not memory, is the constraint that preemption relieves.

Streams are held mid-way by holding their instance's iterations (tests/live/support.py)
until the preemption or drain has been carried out, so "mid-stream" is certain on any CPU.
What re-dispatch promises is asserted, not one machine's tokens: every token reaches the
client exactly once, the stream ends with the requested length, its text is the text of the
tokens it received, and up to the cut it is the same as an uninterrupted run (the same engine
computing the same thing). After the cut a recompute may break a greedy near-tie the other
way (redispatch.py), so the continuation is not compared token for token.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import grpc
import pytest
import pytest_asyncio
from transformers import AutoTokenizer

from slinfer import Chunk, Completion
from slinfer.models import build_random_model
from slinfer.services.cluster.tracker import LiveRequest
from slinfer.services.common import keys
from slinfer.services.common.errors import FailedPrecondition
from slinfer.services.common.records import InstanceState
from slinfer.services.inprocess import LiveStack
from slinfer.services.scheduler.dispatch_config import LIVE_POLICY, DispatchConfig
from slinfer.services.worker.engine.base import SamplingParams
from slinfer.v1 import common_pb2, consolidator_pb2, consolidator_pb2_grpc, worker_pb2
from tests.live.support import (
    hold_executor,
    hold_iterations,
    pin_calibration,
    seed_perf_tables,
)
from tests.live.waits import wait_until

pytestmark = [pytest.mark.live, pytest.mark.asyncio(loop_scope="session")]

GROWING_TABLES = {
    "prefill_ms": [[1, 1.0], [4096, 1.0]],
    "decode_ms": [
        [64, [[1, 50.0], [2, 100.0], [3, 150.0], [4, 200.0], [64, 3200.0]]],
        [4096, [[1, 50.0], [2, 100.0], [3, 150.0], [4, 200.0], [64, 3200.0]]],
    ],
}
LOOSE = {"ttft_slo_s": 60.0, "tpot_slo_s": 5.0}
PROMPT = [5, 6, 7, 8]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_random_model("qwen2", tmp_path_factory.mktemp("consol-models") / "q", seed=3)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, model_dir):
    return seed_perf_tables(tmp_path_factory.mktemp("consol-profiles"), model_dir, GROWING_TABLES)


def _workers(seeded):
    return [
        {"node_id": f"cpu-{i}", "memory_bytes": 2 << 30, "num_threads": 1, "profile_dir": seeded}
        for i in range(2)
    ]


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def stack(etcd, model_dir, seeded):
    # Packing on, but its loop would first run in an hour: the test calls one cycle itself.
    s = await LiveStack.start(
        etcd.endpoint,
        workers=_workers(seeded),
        consolidator={"pack_every_s": 3600.0},
        # T_pack 0: a node below the threshold is due at the first cycle that sees it (the
        # hysteresis itself is tests/policy/test_consolidation.py's).
        dispatch=DispatchConfig(
            default_kv_capacity_tokens=2048, policy=replace(LIVE_POLICY, pack_after_s=0.0)
        ),
    )
    pin_calibration(s)  # the growing tables stand for the device here
    await s.c.deploy("q", str(model_dir), **LOOSE)
    await s.c.deploy("b", str(model_dir), ttft_slo_s=60.0, tpot_slo_s=0.2)
    await s.c.deploy("c", str(model_dir), ttft_slo_s=60.0, tpot_slo_s=0.2)
    yield s
    await s.stop()


def consolidator(stack: LiveStack):
    svc = stack.others[1]
    return svc, consolidator_pb2_grpc.ConsolidatorStub(grpc.aio.insecure_channel(svc.address))


async def _run(stack: LiveStack, model: str, out: list | None = None, **kw):
    """(text, chunk token total, completion); appends chunks to `out` as they arrive."""
    text, tokens, final = [], 0, None
    async for ev in stack.c.generate(
        model, prompt_token_ids=PROMPT, temperature=0, ignore_eos=True, **kw
    ):
        if isinstance(ev, Chunk):
            text.append(ev.text)
            tokens += ev.tokens
            if out is not None:
                out.append(ev)
        elif isinstance(ev, Completion):
            final = ev
    assert final is not None
    return "".join(text), tokens, final


def _busy_instance(stack: LiveStack, model: str) -> str | None:
    tracker = stack.scheduler.dispatcher.tracker
    return next(
        (i for i, reqs in tracker.by_instance.items() if i.startswith(model) and reqs), None
    )


async def _dispatch(stack: LiveStack, rid: str, out: list, max_tokens: int):
    """Drive the scheduler's dispatcher directly: its responses carry the token ids."""
    model = stack.scheduler.watcher.view.models["q"]
    req = LiveRequest(rid, "q", time.time(), len(PROMPT), 60.0, 5.0)
    sampling = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    placements = []
    async for placed, resp in stack.scheduler.dispatcher.generate(model, req, PROMPT, sampling):
        placements.append(placed)
        out.append(resp)
    return placements[-1]


async def test_preempt_mid_stream_is_lossless(stack: LiveStack, model_dir) -> None:
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    ref: list = []
    await _dispatch(stack, "ref", ref, 120)
    ref_ids = [t for r in ref for t in r.token_ids]
    _svc, stub = consolidator(stack)
    got: list = []
    task = asyncio.create_task(_dispatch(stack, "preempted", got, 120))
    await wait_until(lambda: len(got) >= 5, what="the first tokens")
    victim = await wait_until(lambda: _busy_instance(stack, "q"), what="q's busy instance")
    with hold_iterations(stack.engine_of(victim)):
        plan = await stub.Preempt(consolidator_pb2.PreemptRequest(instance_id=victim), timeout=60)
        cut = len([t for r in got for t in r.token_ids])  # nothing more comes from the victim
    placement = await task
    assert plan.executed and not plan.error and plan.requests_moved == 1
    assert list(plan.victim_instance_ids) == [victim]
    assert placement.instance_id != victim, "the request finished on another instance"
    assert 5 <= cut < 120
    ids = [t for r in got for t in r.token_ids]
    text = "".join(r.text for r in got)
    # Every token once, the requested length, and the text of exactly those tokens.
    assert len(ids) == 120 and got[-1].finished and got[-1].completion_tokens == 120
    assert text == tok.decode(ids, skip_special_tokens=True)
    # Up to the cut the same engine computed the same thing alone: the uninterrupted run.
    assert ids[:cut] == ref_ids[:cut]
    assert all(r.finish_reason != common_pb2.FINISH_REASON_PREEMPTED for r in got)
    assert victim not in stack.scheduler.watcher.view.instances

    # Through the gateway too: chunks carry each token once, TTFT is the first token's.
    ref_text, _, _ = await _run(stack, "q", max_tokens=120)
    chunks: list[Chunk] = []
    client_task = asyncio.create_task(_run(stack, "q", chunks, max_tokens=120))
    await wait_until(lambda: len(chunks) >= 3, what="the first chunks")
    victim = await wait_until(lambda: _busy_instance(stack, "q"), what="q's busy instance")
    with hold_iterations(stack.engine_of(victim)):
        plan = await stub.Preempt(consolidator_pb2.PreemptRequest(instance_id=victim), timeout=60)
        before = "".join(c.text for c in chunks)
    text, tokens, final = await client_task
    assert plan.requests_moved == 1
    assert tokens == final.completion_tokens == 120
    assert text.startswith(before) and ref_text.startswith(before)
    assert final.instance_id != victim
    assert final.ttft_s < 5.0, "TTFT is the first token's, not re-counted at re-dispatch"


async def test_decode_budget_preemption_keeps_every_stream(stack: LiveStack) -> None:
    """b (batch 2 -> 3) cannot take a request within the decode budget of cpu-0 because c is
    there too; the consolidator evicts c (smaller batch than the target), c's request resumes
    elsewhere, and every stream completes."""
    # Load b and c on cpu-0 (placement: most loaded node first).
    _, _, fb = await _run(stack, "b", max_tokens=2)
    _, _, fc = await _run(stack, "c", max_tokens=2)
    assert fb.node_id == fc.node_id
    seen: dict[str, list] = {"b1": [], "b2": [], "c1": []}
    tasks = {
        name: asyncio.create_task(_run(stack, name[0], seen[name], max_tokens=200)) for name in seen
    }
    await wait_until(lambda: all(seen.values()), what="three streams under way")
    view = stack.scheduler.watcher.view
    # All three stay in flight until c has been evicted for b's third request.
    with (
        hold_iterations(stack.engine_of(fb.instance_id)),
        hold_iterations(stack.engine_of(fc.instance_id)),
    ):
        b3_task = asyncio.create_task(_run(stack, "b", max_tokens=20))
        await wait_until(lambda: fc.instance_id not in view.instances, what="c's eviction")
    b3 = await b3_task
    results = {name: await t for name, t in tasks.items()}
    _svc, stub = consolidator(stack)
    plans = (await stub.ListPlans(consolidator_pb2.ListPlansRequest())).plans
    decode = [p for p in plans if p.kind == consolidator_pb2.PLAN_KIND_PREEMPT_DECODE]
    assert decode, "the scheduler asked for a decode-budget preemption"
    plan = decode[0]
    assert plan.executed and plan.target_instance_id == fb.instance_id
    assert list(plan.victim_instance_ids) == [fc.instance_id], "c: the smaller batch"
    assert b3[2].instance_id == fb.instance_id and b3[2].completion_tokens == 20 == b3[1]
    for _name, (_text, tokens, final) in results.items():
        assert final.completion_tokens == tokens == 200, "every token once, all of them"
    assert results["c1"][2].instance_id != fc.instance_id


async def test_loading_instance_is_never_evicted(stack: LiveStack, model_dir) -> None:
    worker = stack.workers[1]
    req = worker_pb2.LoadInstanceRequest(
        instance_id="q-loading", model_id="q", path=str(model_dir), kv_capacity_tokens=256
    )
    view = stack.others[1].watcher.view
    _svc, stub = consolidator(stack)
    with hold_executor(worker.lifecycle.loader):  # the load waits behind this: it stays LOADING
        load = asyncio.create_task(worker.lifecycle.load(req))
        await wait_until(lambda: "q-loading" in view.instances, what="the loading record")
        assert view.instances["q-loading"].state is InstanceState.LOADING
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Preempt(consolidator_pb2.PreemptRequest(instance_id="q-loading"))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "loading" in err.value.details()
        with pytest.raises(FailedPrecondition, match="still loading"):  # the worker refuses too
            await worker.lifecycle.evict("q-loading")
    await load
    assert worker.instances["q-loading"].state.value == "ready", "the load was not disturbed"
    await worker.unload_instance("q-loading")


async def test_drain_moves_every_request_and_empties_the_node(stack: LiveStack) -> None:
    _, _, first = await _run(stack, "q", max_tokens=2)
    source = first.node_id
    chunks: dict[int, list] = {i: [] for i in range(3)}
    tasks = [asyncio.create_task(_run(stack, "q", chunks[i], max_tokens=150)) for i in range(3)]
    await wait_until(lambda: all(chunks.values()), what="three streams under way")
    _svc, stub = consolidator(stack)
    view = stack.scheduler.watcher.view
    tracker = stack.scheduler.dispatcher.tracker
    try:
        with hold_iterations(stack.engine_of(first.instance_id)):
            on_source = len(tracker.by_instance.get(first.instance_id, {}))
            plan = await stub.Drain(consolidator_pb2.DrainRequest(node_id=source), timeout=120)
        results = [await t for t in tasks]
        assert plan.executed and not plan.error, plan.error
        assert plan.requests_moved == on_source >= 1, "every request on the node moved"
        assert not view.instances_on(source), "the drained node hosts nothing"
        assert source in view.drains
        for _text, tokens, final in results:
            assert final.completion_tokens == tokens == 150, "every token once, all of them"
            assert final.node_id != source
        # While draining, new work goes elsewhere.
        _, _, after = await _run(stack, "q", max_tokens=2)
        assert after.node_id != source
        status = await stack.c.status()
        assert {n.node_id: n.draining for n in status.nodes}[source] is True
    finally:  # undo makes the node usable again (also for the tests below)
        await stub.Drain(consolidator_pb2.DrainRequest(node_id=source, undo=True))
    assert source not in view.drains


async def test_pack_empties_the_least_loaded_node(stack: LiveStack) -> None:
    svc = stack.others[1]
    # One idle q instance per node: packing moves one of them and frees a node.
    view = stack.scheduler.watcher.view
    await wait_until(lambda: not view.drains, what="no drain marks")
    worker = stack.workers[0] if view.instances_on("cpu-1") else stack.workers[1]
    spare = worker_pb2.LoadInstanceRequest(
        instance_id="q-spare",
        model_id="q",
        path=view.models["q"].path,
        kv_capacity_tokens=256,
    )
    await worker.lifecycle.load(spare)
    await wait_until(lambda: len(view.nodes_in_use()) == 2, what="both nodes in use")
    cview = svc.watcher.view  # the consolidator plans from its own view of etcd
    # Packing never moves a loading instance: wait until the consolidator sees them ready.
    await wait_until(
        lambda: (
            len(cview.nodes_in_use()) == 2
            and not cview.drains
            and cview.state_of("q-spare") is InstanceState.READY
            and all(i.state is InstanceState.READY for i in cview.instances.values())
        ),
        what="the consolidator's view: both nodes in use, no drain, every instance ready",
    )
    await wait_until(
        lambda: svc.consolidation.policy_config.pack_after_s == 0.0,
        what="the schedulers' policy at the consolidator",
    )
    plan = await svc.consolidation.pack_once()
    assert plan is not None and plan.kind == consolidator_pb2.PLAN_KIND_PACK
    assert plan.executed, plan.error
    await wait_until(lambda: len(view.nodes_in_use()) == 1, what="one node in use")
    assert plan.node_id not in view.nodes_in_use()
    assert plan.node_id not in view.drains, "a packed node is free for later placements"


async def test_leader_key_names_the_serving_replica(stack: LiveStack) -> None:
    svc, _ = consolidator(stack)
    entry = await stack.scheduler.store.get(keys.election("consolidator"))
    assert entry is not None and entry.value["address"] == svc.address
    assert svc.is_leader()
