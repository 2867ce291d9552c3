"""Token-level sharing, live: arbiter, admission by decode budget, scale to zero, leases."""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_asyncio

from slinfer import Chunk, Completion
from slinfer.models import build_random_model
from slinfer.services.common import keys
from slinfer.services.inprocess import LiveStack
from slinfer.services.scheduler import metrics as scheduler_metrics
from slinfer.services.worker.calibration import hardware_label
from tests.live.support import hold_iterations, pin_calibration, seed_perf_tables
from tests.live.waits import wait_until

pytestmark = [pytest.mark.live, pytest.mark.asyncio(loop_scope="session")]

# A profile that says one request costs 100 ms per decode iteration whatever the batch: with
# TPOT SLO 0.2 s one busy instance takes 1.1 * 0.1 / (0.95 * 0.2) = 58 % of the device.
FLAT_TABLES = {
    "prefill_ms": [[1, 1.0], [4096, 1.0]],
    "decode_ms": [[64, [[1, 100.0], [64, 100.0]]], [4096, [[1, 100.0], [64, 100.0]]]],
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharing-models")
    return {
        name: build_random_model(arch, root / name, seed=i)
        for i, (name, arch) in enumerate((("a", "llama"), ("b", "qwen2"), ("c", "qwen2")))
    }


@pytest.fixture(scope="module")
def seeded_profiles(tmp_path_factory, models):
    """Flat tables for the Qwen2 directories of b and c (same architecture, same key);
    the Llama directory of a is measured live."""
    root = tmp_path_factory.mktemp("seeded-profiles")
    for name in ("b", "c"):
        seed_perf_tables(root, models[name], FLAT_TABLES)
    return root


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def stack(etcd, models, seeded_profiles):
    # These tests show the budget of the seeded tables at work, so the worker must not
    # calibrate them away (the tiny models run far faster than the tables say, and a held
    # iteration far slower): its observed/predicted ratio is pinned at 1 here. Calibration
    # itself is tested in tests/policy/test_calibration.py and test_node_calibration below.
    s = await LiveStack.start(
        etcd.endpoint,
        workers=[
            {
                "node_id": "cpu-0",
                "memory_bytes": 2 << 30,
                "num_threads": 1,
                "profile_dir": seeded_profiles,
            }
        ],
        # These tests show admission holding work back; proactive preemption (which would
        # evict b for c here) is tested in test_consolidation.py.
        consolidator={"advisory": True},
    )
    pin_calibration(s)
    loose = {"ttft_slo_s": 60.0, "tpot_slo_s": 5.0}
    await s.c.deploy("a", str(models["a"]), **loose)
    await s.c.deploy("a-urgent", str(models["a"]), ttft_slo_s=60.0, tpot_slo_s=0.5)
    await s.c.deploy("a-loose", str(models["a"]), **loose)
    await s.c.deploy("b", str(models["b"]), ttft_slo_s=60.0, tpot_slo_s=0.2)
    await s.c.deploy("c", str(models["c"]), ttft_slo_s=60.0, tpot_slo_s=0.2)
    await s.c.deploy("short", str(models["a"]), keep_alive_s=1.0, **loose)
    yield s
    await s.stop()


async def _final(
    stack: LiveStack, model: str, chunks: list | None = None, **kw
) -> tuple[Completion, float]:
    final = None
    async for ev in stack.c.generate(
        model, prompt_token_ids=[5, 6, 7, 8], temperature=0, ignore_eos=True, **kw
    ):
        if isinstance(ev, Completion):
            final = ev
        elif chunks is not None and isinstance(ev, Chunk):
            chunks.append(ev)
    assert final is not None
    return final, time.monotonic()


def _grants_since(arbiter, t0: float) -> list:  # noqa: ANN001
    return [g for g in list(arbiter.grant_log) if g.at_s >= t0]


def _held_decisions() -> float:
    """Admission decisions that held a request back so far (each retry counts): no capacity,
    or a preemption the advisory consolidator only plans."""
    metric = scheduler_metrics.DECISIONS
    return sum(
        s.value
        for m in metric.collect()
        for s in m.samples
        if s.name.endswith("_total") and s.labels.get("kind") in ("none", "preempt")
    )


async def test_three_models_interleave_by_least_headroom(stack: LiveStack) -> None:
    loaded = [(await _final(stack, m, max_tokens=2))[0] for m in ("a", "a-urgent", "a-loose")]
    worker = stack.workers[0]
    arbiter = worker.arbiter
    start = time.time()
    engines = [stack.engine_of(f.instance_id) for f in loaded]
    # Held until all three have work, so that they compete from the first iteration on.
    with hold_iterations(engines[0]), hold_iterations(engines[1]), hold_iterations(engines[2]):
        tasks = [
            asyncio.create_task(_final(stack, m, max_tokens=60))
            for m in ("a", "a-urgent", "a-loose")
        ]
        await wait_until(
            lambda: all(worker.instances[f.instance_id].busy for f in loaded),
            what="three busy instances",
        )
    results = [await t for t in tasks]
    log = _grants_since(arbiter, start)
    ids = {r[0].instance_id for r in results}
    assert len(ids) == 3, "three models, three instances on one worker"
    contested = [g for g in log if g.others]
    assert contested, "the three instances never had work at the same time"
    assert {g.instance_id for g in contested} == ids, "every instance got turns"
    switches = sum(1 for x, y in zip(log, log[1:], strict=False) if x.instance_id != y.instance_id)
    assert switches >= 3, "iterations interleave between instances"
    for g in contested:  # EDF: the grant goes to the least headroom (earliest deadline)
        assert g.deadline_s <= min(d for _, d in g.others) + 1e-9
    # Same arrival, same length: the tight TPOT SLO has the earlier deadline token for
    # token, so it is served first and finishes first.
    last = {i: max(g.at_s for g in log if g.instance_id == i) for i in ids}
    urgent = next(i for i in ids if i.startswith("a-urgent"))
    assert all(last[urgent] < last[i] for i in ids - {urgent}), "tight TPOT SLO served first"


async def test_admission_holds_back_over_budget_then_admits(stack: LiveStack) -> None:
    fb, _ = await _final(stack, "b", max_tokens=2)  # load b and c with their (flat) tables
    fc, _ = await _final(stack, "c", max_tokens=2)
    arbiter = stack.workers[0].arbiter
    mark = time.time()
    b_chunks: list = []
    long_task = asyncio.create_task(_final(stack, "b", b_chunks, max_tokens=300))
    await wait_until(lambda: b_chunks, what="b decoding (58 % of the device)")
    c_chunks: list = []
    with hold_iterations(stack.engine_of(fb.instance_id)):  # b stays in flight meanwhile
        before = _held_decisions()
        held_task = asyncio.create_task(_final(stack, "c", c_chunks, max_tokens=5))
        # c (another 58 %) would push the sum of slices past 1: admission holds it back.
        await wait_until(lambda: _held_decisions() >= before + 2, what="c held back twice")
        assert not c_chunks and not held_task.done(), "c was admitted over the budget"
    long, _ = await long_task
    held, _ = await held_task
    assert long.completion_tokens == 300 and held.completion_tokens == 5
    assert held.load_s == 0.0, "c waited for capacity, not for a load"
    # c ran only after b's request had finished: every c iteration follows every b one.
    grants = _grants_since(arbiter, mark)
    b_at = [g.at_s for g in grants if g.instance_id == fb.instance_id]
    c_at = [g.at_s for g in grants if g.instance_id == fc.instance_id]
    assert b_at and c_at and min(c_at) >= max(b_at)


async def test_scale_to_zero_then_cold_start(stack: LiveStack) -> None:
    first, _ = await _final(stack, "short", max_tokens=3)
    iid = first.instance_id

    async def unloaded() -> bool:
        return iid not in {i.instance_id for i in (await stack.c.status()).instances}

    await wait_until(unloaded, what="the idle instance unloaded after its keep-alive")
    second, _ = await _final(stack, "short", max_tokens=3)
    assert second.instance_id != iid
    assert second.load_s > 0, "the next request waited for a cold start"
    assert second.ttft_s >= second.load_s


async def test_perf_tables_measured_cached_and_published(stack: LiveStack) -> None:
    entries, _ = await stack.scheduler.store.list(keys.PROFILES)
    labels = {e.key for e in entries}
    label = hardware_label("cpu", 1)
    assert keys.profile("a", label) in labels and keys.profile("b", label) in labels
    b = next(e.value for e in entries if e.key == keys.profile("b", label))
    assert b["decode_ms"] == FLAT_TABLES["decode_ms"], "seeded disk cache was used"
    a = next(e.value for e in entries if e.key == keys.profile("a", label))
    assert len(a["prefill_ms"]) >= 3 and all(ms > 0 for _, ms in a["prefill_ms"])


async def test_leases_expire_with_the_scheduler_and_work_finishes(stack: LiveStack) -> None:
    first, _ = await _final(stack, "a-loose", max_tokens=2)
    arbiter = stack.workers[0].arbiter
    chunks: list = []
    task = asyncio.create_task(_final(stack, "a-loose", chunks, max_tokens=400))
    await wait_until(lambda: chunks, what="the request under way")
    # Held in flight while the scheduler's session dies, so it finishes on unleased grants.
    with hold_iterations(stack.engine_of(first.instance_id)):
        prefix = keys.node_leases("cpu-0")

        async def leases() -> list:
            return (await stack.scheduler.store.list(prefix))[0]

        entries = await wait_until(leases, what="the request's lease in etcd")
        (entry,) = entries[0].value["requests"].values()
        assert entry["input_tokens"] == 4 and entry["tpot_slo_s"] == 5.0
        # The scheduler's etcd session dies (its lease expires): every budget it wrote goes.
        await stack.scheduler.registration.stop(revoke=True)
        await wait_until(lambda: _empty(leases), what="the leases gone with its session")
        mark = time.time()
    final, _ = await task
    assert final.completion_tokens == 400, "the worker finished the admitted request"
    # ...on the deadlines the request carried in its Submit (the worker reads no lease).
    assert any(g.instance_id == first.instance_id for g in _grants_since(arbiter, mark))
    await stack.restart_scheduler()


async def _empty(listing) -> bool:  # noqa: ANN001
    return not await listing()


async def test_node_calibration_is_published(stack: LiveStack) -> None:
    """The worker measures ρ and its iterations, and the node record carries them."""
    await _final(stack, "a", max_tokens=8)
    calibration = stack.workers[0].device.calibration
    assert calibration.iterations > 0
    record = stack.workers[0].node_record()
    assert 0.0 < record.prefill_share <= 1.0, "the prefills just run are in ρ"
    assert record.perf_ratio == 1.0  # pinned in this module (see the fixture)
    assert record.load_bytes_per_s > 0, "loads measured"
