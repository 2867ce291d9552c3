"""Token-level sharing, live: arbiter, admission by decode budget, scale to zero, leases."""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_asyncio

from slinfer import Completion
from slinfer.models import build_random_model
from slinfer.services.common import keys
from slinfer.services.inprocess import LiveStack
from slinfer.services.worker.calibration import auto_table_key, hardware_label
from slinfer.services.worker.profiler import ProfileCache

pytestmark = pytest.mark.asyncio(loop_scope="session")

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
    cache = ProfileCache(root)
    for name in ("b", "c"):  # under the key of the engine and weights a worker picks
        cache.put(auto_table_key(models[name], 1), FLAT_TABLES)
    return root


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def stack(etcd, models, seeded_profiles):
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
    loose = {"ttft_slo_s": 60.0, "tpot_slo_s": 5.0}
    await s.c.deploy("a", str(models["a"]), **loose)
    await s.c.deploy("a-urgent", str(models["a"]), ttft_slo_s=60.0, tpot_slo_s=0.5)
    await s.c.deploy("a-loose", str(models["a"]), **loose)
    await s.c.deploy("b", str(models["b"]), ttft_slo_s=60.0, tpot_slo_s=0.2)
    await s.c.deploy("c", str(models["c"]), ttft_slo_s=60.0, tpot_slo_s=0.2)
    await s.c.deploy("short", str(models["a"]), keep_alive_s=1.0, **loose)
    yield s
    await s.stop()


async def _final(stack: LiveStack, model: str, **kw) -> tuple[Completion, float]:
    final = None
    async for ev in stack.c.generate(
        model, prompt_token_ids=[5, 6, 7, 8], temperature=0, ignore_eos=True, **kw
    ):
        if isinstance(ev, Completion):
            final = ev
    assert final is not None
    return final, time.monotonic()


async def test_three_models_interleave_by_least_headroom(stack: LiveStack) -> None:
    for m in ("a", "a-urgent", "a-loose"):  # load all three first
        await _final(stack, m, max_tokens=2)
    arbiter = stack.workers[0].arbiter
    start = len(arbiter.grant_log)
    results = await asyncio.gather(
        *(_final(stack, m, max_tokens=60) for m in ("a", "a-urgent", "a-loose"))
    )
    log = list(arbiter.grant_log)[start:]
    ids = {r[0].instance_id for r in results}
    assert len(ids) == 3, "three models, three instances on one worker"
    contested = [g for g in log if g.others]
    assert contested, "the three instances never had work at the same time"
    assert {g.instance_id for g in contested} == ids, "every instance got turns"
    switches = sum(1 for x, y in zip(log, log[1:], strict=False) if x.instance_id != y.instance_id)
    assert switches >= 3, "iterations interleave between instances"
    for g in contested:  # EDF: the grant goes to the least headroom (earliest deadline)
        assert g.deadline_s <= min(d for _, d in g.others) + 1e-9
    urgent = next(r[0].instance_id for r in results if r[0].instance_id.startswith("a-urgent"))
    urgent_first = [g for g in contested if g.instance_id == urgent]
    assert len(urgent_first) >= len(contested) // 3, "tight TPOT SLO gets its share first"


async def test_admission_holds_back_over_budget_then_admits(stack: LiveStack) -> None:
    await _final(stack, "b", max_tokens=2)  # load b and c with their (flat) tables
    await _final(stack, "c", max_tokens=2)
    long_task = asyncio.create_task(_final(stack, "b", max_tokens=300))
    await asyncio.sleep(0.3)  # b is decoding: 58 % of the device
    held, held_done_at = await _final(stack, "c", max_tokens=5)
    long, long_done_at = await long_task
    # c (another 58 %) would push the sum of slices past 1: it starts only after b finished.
    assert held_done_at >= long_done_at - 0.05
    assert held.ttft_s > 0.3, "the over-budget request waited for capacity"
    assert held.load_s == 0.0 and long.completion_tokens == 300


async def test_scale_to_zero_then_cold_start(stack: LiveStack) -> None:
    first, _ = await _final(stack, "short", max_tokens=3)
    iid = first.instance_id
    for _ in range(100):
        status = await stack.c.status()
        if iid not in {i.instance_id for i in status.instances}:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("idle instance was not unloaded after its keep-alive")
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
    await _final(stack, "a-loose", max_tokens=2)
    task = asyncio.create_task(_final(stack, "a-loose", max_tokens=400))
    prefix = keys.node_leases("cpu-0")
    for _ in range(100):
        entries, _ = await stack.scheduler.store.list(prefix)
        if entries:
            break
        await asyncio.sleep(0.02)
    assert entries and entries[0].value["batch"] == 1 and entries[0].value["time_slice"] > 0
    # The scheduler's etcd session dies (its lease expires): every budget it wrote goes.
    await stack.scheduler.registration.stop(revoke=True)
    arbiter = stack.workers[0].arbiter
    for _ in range(100):
        if not arbiter.leases.leases:
            break
        await asyncio.sleep(0.02)
    assert not arbiter.leases.leases, "leases did not expire with the scheduler's session"
    mark = len(arbiter.grant_log)
    final, _ = await task
    assert final.completion_tokens == 400, "the worker finished the admitted request"
    assert any(not g.leased for g in list(arbiter.grant_log)[mark:])
    await stack.restart_scheduler()
