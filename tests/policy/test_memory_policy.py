"""Forward-looking memory scaling (DESIGN.md §3): KV demand, watermark, ledger."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slinfer.policy.kv_scaling import (
    Footprint,
    Ledger,
    LedgerError,
    LedgerOp,
    LedgerRequest,
    LedgerStatus,
    OutputHistory,
    engine_need_bytes,
    kv_demand,
    kv_demand_tokens,
    watermark_may_move,
    watermark_target,
)
from tests.policy.factories import req


def test_kv_demand_uses_mean_output_and_lmin() -> None:
    requests = [
        req("a", input_tokens=100, output_tokens=10),
        req("b", input_tokens=200, output_tokens=600),
    ]
    # Σ (I + max(O, Ō)) with Ō = 256: (100 + 256) + (200 + 600) = 1156 -> floor 4096.
    assert kv_demand_tokens(requests, 256, 4096) == 4096
    assert kv_demand_tokens(requests, 256, 0) == 1156
    assert kv_demand(requests, 256, kv_bytes_per_token=2, l_min_tokens=0) == 2312
    # rounded up to 16-token blocks: 73 blocks = 1168 tokens.
    assert kv_demand(requests, 256, 2, l_min_tokens=0, block_tokens=16) == 1168 * 2


def test_kv_demand_grows_past_the_forecast() -> None:
    long = [req("a", input_tokens=100, output_tokens=900)]
    assert kv_demand_tokens(long, 256, 0) == 1000


def test_engine_need_covers_next_token() -> None:
    assert engine_need_bytes(1000, 3, kv_bytes_per_token=1, block_tokens=16) == 1008


def test_watermark_up() -> None:
    assert watermark_target(1000, 800, 10_000, 0.25) == 1250


def test_watermark_up_limited_by_free_memory() -> None:
    # allocation may grow only by what the node has left: 800 + 300.
    assert watermark_target(1000, 800, 300, 0.25) == 1100


def test_watermark_down() -> None:
    # 400·1.25 = 500 < 1000/1.25 = 800 -> shrink to 500.
    assert watermark_target(400, 1000, 0, 0.25) == 500


def test_watermark_hold_in_band() -> None:
    # 700·1.25 = 875 ≥ 800: inside the band, keep.
    assert watermark_target(700, 1000, 0, 0.25) is None
    assert watermark_target(1000, 1000, 0, 0.25) is None


def test_watermark_rounds_to_blocks() -> None:
    assert watermark_target(1000, 800, 10_000, 0.25, block_bytes=64) == 1280


@given(
    demand=st.integers(1, 10**6),
    allocated=st.integers(0, 10**6),
    free=st.integers(0, 10**6),
)
def test_watermark_is_stable_after_a_move(demand: int, allocated: int, free: int) -> None:
    """After scaling to the target, the same demand asks for nothing more (no flapping)."""
    target = watermark_target(demand, allocated, free, 0.25)
    if target is None:
        return
    assert target <= allocated + free
    remaining_free = free - (target - allocated)
    assert watermark_target(demand, target, remaining_free, 0.25) is None or target < demand


@settings(max_examples=120, deadline=None)
@given(
    inputs=st.lists(st.tuples(st.integers(1, 5000), st.integers(0, 2000)), max_size=12),
    mean_out=st.floats(0.0, 1000.0),
    allocated_tokens=st.integers(0, 60_000),
    free_tokens=st.integers(0, 60_000),
    block=st.sampled_from([1, 16, 32]),
)
def test_watermark_precheck_never_hides_a_move(
    inputs: list, mean_out: float, allocated_tokens: int, free_tokens: int, block: int
) -> None:
    requests = [req(f"r{i}", input_tokens=a, output_tokens=b) for i, (a, b) in enumerate(inputs)]
    context = sum(a + b for a, b in inputs)
    c = 3
    demand = max(
        kv_demand(requests, mean_out, c, 4096, block),
        engine_need_bytes(context, len(requests), c, block),
    )
    target = watermark_target(demand, allocated_tokens * c, free_tokens * c, 0.25, block * c)
    if not watermark_may_move(
        context, len(requests), mean_out, allocated_tokens * c, c, 4096, 0.25, block
    ):
        assert target is None


def test_output_history_prior() -> None:
    h = OutputHistory(prior_tokens=512, prior_weight=1)
    assert h.mean_tokens == 512
    h.observe(100)
    assert h.mean_tokens == pytest.approx(306)


# -- ledger ------------------------------------------------------------------------------------


def _req(ledger: Ledger, iid: str, op: LedgerOp, rid: str, kv: int = 0, w: int = 0):
    return ledger.submit(LedgerRequest(rid, iid, op, ledger.revision(iid), w, kv))


def test_increase_waits_for_an_actual_release() -> None:
    ledger = Ledger("gpu0", capacity_bytes=100)
    assert _req(ledger, "a", LedgerOp.KV_RESIZE, "a1", kv=60).status is LedgerStatus.APPLIED
    # a shrinks: approved at once, but memory is only back once the worker says so.
    shrink = _req(ledger, "a", LedgerOp.KV_RESIZE, "a2", kv=20)
    assert shrink.status is LedgerStatus.APPLIED
    assert (ledger.planned_bytes, ledger.actual_bytes) == (20, 60)
    grow = _req(ledger, "b", LedgerOp.KV_RESIZE, "b1", kv=50)
    assert grow.status is LedgerStatus.DEFERRED
    assert ledger.deferred() == ("b",)
    assert ledger.release_in_flight()
    released = ledger.complete("a", shrink.revision)
    assert [(x.instance_id, x.footprint) for x in released] == [("b", Footprint(0, 50))]
    assert (ledger.planned_bytes, ledger.actual_bytes) == (70, 70)
    assert ledger.deferred() == ()


def test_plan_that_cannot_fit_is_rejected() -> None:
    ledger = Ledger("gpu0", capacity_bytes=100)
    _req(ledger, "a", LedgerOp.LOAD, "a1", w=70)
    outcome = _req(ledger, "b", LedgerOp.LOAD, "b1", w=40)
    assert outcome.status is LedgerStatus.REJECTED
    assert ledger.revision("b") == 0


def test_stale_conflict_and_idempotent_retry() -> None:
    ledger = Ledger("gpu0", capacity_bytes=100)
    first = ledger.submit(LedgerRequest("x1", "a", LedgerOp.LOAD, 0, weights_bytes=10))
    assert (first.status, first.revision) == (LedgerStatus.APPLIED, 1)
    retry = ledger.submit(LedgerRequest("x1", "a", LedgerOp.LOAD, 0, weights_bytes=10))
    assert retry.status is LedgerStatus.APPLIED and retry.approvals == ()
    assert ledger.planned_bytes == 10
    stale = ledger.submit(LedgerRequest("x2", "a", LedgerOp.KV_RESIZE, 0, kv_bytes=5))
    assert stale.status is LedgerStatus.STALE
    ahead = ledger.submit(LedgerRequest("x3", "a", LedgerOp.KV_RESIZE, 7, kv_bytes=5))
    assert ahead.status is LedgerStatus.CONFLICT
    unknown = ledger.submit(LedgerRequest("y", "b", LedgerOp.LOAD, 3, weights_bytes=5))
    assert unknown.status is LedgerStatus.CONFLICT


def test_newer_request_supersedes_a_deferred_one() -> None:
    ledger = Ledger("gpu0", capacity_bytes=100)
    _req(ledger, "a", LedgerOp.KV_RESIZE, "a1", kv=90)
    shrink = _req(ledger, "a", LedgerOp.KV_RESIZE, "a2", kv=10)
    assert _req(ledger, "b", LedgerOp.KV_RESIZE, "b1", kv=50).status is LedgerStatus.DEFERRED
    smaller = _req(ledger, "b", LedgerOp.KV_RESIZE, "b2", kv=5)
    assert smaller.status is LedgerStatus.APPLIED  # fits next to a's 90 actual
    assert ledger.deferred() == ()
    assert ledger.complete("a", shrink.revision) == ()


def test_evict_and_forget() -> None:
    ledger = Ledger("gpu0", capacity_bytes=100)
    _req(ledger, "a", LedgerOp.LOAD, "a1", w=30)
    _req(ledger, "a", LedgerOp.KV_RESIZE, "a2", kv=20)
    with pytest.raises(LedgerError):
        ledger.forget("a")
    evict = _req(ledger, "a", LedgerOp.EVICT, "a3")
    assert ledger.actual_bytes == 50
    ledger.complete("a", evict.revision)
    ledger.forget("a")
    assert (ledger.planned_bytes, ledger.actual_bytes) == (0, 0)


OPS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(list(LedgerOp) + ["complete"]),
        st.integers(0, 70),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(ops=OPS)
def test_approved_memory_never_exceeds_the_node(ops: list) -> None:
    """Planned and actual (approved) weights + KV stay within capacity after any sequence."""
    ledger = Ledger("gpu0", capacity_bytes=100)
    n = 0
    for iid, op, size in ops:
        n += 1
        if op == "complete":
            ledger.complete(iid, ledger.revision(iid))
        else:
            ledger.submit(
                LedgerRequest(f"{iid}{n}", iid, op, ledger.revision(iid), size, size // 2)
            )
        assert ledger.planned_bytes <= ledger.capacity_bytes
        assert ledger.actual_bytes <= ledger.capacity_bytes
        for x in ("a", "b", "c"):
            planned, actual = ledger.planned(x), ledger.actual(x)
            if x not in ledger.deferred():
                # an approved plan is covered by what the ledger counts as held
                assert planned.weights_bytes <= actual.weights_bytes
                assert planned.kv_bytes <= actual.kv_bytes
    # Once every approved action has completed, the head of the queue really does not fit.
    for x in ("a", "b", "c"):
        ledger.complete(x, ledger.revision(x))
    if ledger.deferred():
        head = ledger.deferred()[0]
        held = ledger.actual(head)
        grown = held.join(ledger.planned(head))
        assert ledger.actual_bytes - held.total_bytes + grown.total_bytes > ledger.capacity_bytes
