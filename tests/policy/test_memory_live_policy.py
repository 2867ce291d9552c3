"""The pieces the live memory service adds to the pure policy: the ledger's persistence
(what etcd holds), the node book's incarnation rule, and `plan_kv` in both scaling modes."""

from __future__ import annotations

from dataclasses import dataclass

from slinfer.policy.kv_scaling import KvAllocation, KvScaling, KvScalingConfig, plan_kv
from slinfer.policy.ledger import Ledger, LedgerOp, LedgerRequest, LedgerStatus
from slinfer.services.memory.state import NodeBook


@dataclass
class R:
    input_tokens: int
    output_tokens: int = 0


def _req(n: int, iid: str, op: LedgerOp, rev: int, w: int = 0, kv: int = 0) -> LedgerRequest:
    return LedgerRequest(f"{iid}-{n}", iid, op, rev, w, kv)


def test_ledger_round_trip_keeps_revisions_queue_and_deferrals():
    ledger = Ledger("n", 100)
    ledger.submit(_req(1, "a", LedgerOp.LOAD, 0, w=40))
    ledger.submit(_req(2, "b", LedgerOp.LOAD, 0, w=40))
    assert ledger.complete("a", 1) == () and ledger.complete("b", 1) == ()
    down = ledger.submit(_req(3, "b", LedgerOp.KV_RESIZE, 1, kv=0))
    down = ledger.submit(_req(4, "b", LedgerOp.LOAD, 2, w=10))  # a decrease, not completed
    assert down.status is LedgerStatus.APPLIED
    up = ledger.submit(_req(5, "a", LedgerOp.KV_RESIZE, 1, kv=30))
    assert up.status is LedgerStatus.DEFERRED

    again = Ledger.from_dict("n", ledger.to_dict(), 100)
    assert again.planned_bytes == ledger.planned_bytes == 80
    assert again.actual_bytes == ledger.actual_bytes == 80
    assert again.deferred() == ("a",)
    assert again.revision("a") == 2 and again.revision("b") == 3
    # A retry of the last request is idempotent after the round trip too.
    assert again.submit(_req(5, "a", LedgerOp.KV_RESIZE, 1, kv=30)).status is LedgerStatus.DEFERRED
    # The neighbour's completion releases the deferred increase.
    released = again.complete("b", 3)
    assert [(a.instance_id, a.revision, a.footprint.kv_bytes) for a in released] == [("a", 2, 30)]
    assert again.actual_bytes == 80 and again.deferred() == ()


def test_node_book_of_an_earlier_worker_incarnation_is_discarded():
    book = NodeBook("n", Ledger("n", 100), node_started_at=1.0)
    book.ledger.submit(_req(1, "a", LedgerOp.LOAD, 0, w=40))
    value = book.to_value()
    assert value["instances"]["a"]["planned_weights_bytes"] == 40
    same = NodeBook.from_value("n", value, 100, started_at=1.0)
    assert same.ledger.planned_bytes == 40
    fresh = NodeBook.from_value("n", value, 100, started_at=2.0)  # the worker restarted
    assert fresh.ledger.planned_bytes == 0 and fresh.actions == []


def test_plan_kv_forward_reserves_the_forecast_with_the_watermark():
    # C = 10 B/token, blocks of 16 tokens; one request of 20 prompt tokens, Ō = 30, L_min 64:
    # demand = max(20 + 30, 64) = 64 tokens = 640 B; up to 640·1.25 = 800 B (5 blocks).
    alloc = KvAllocation(kv_bytes_per_token=10, block_tokens=16, allocated_bytes=0,
                         node_free_bytes=10_000)  # fmt: skip
    forward = KvScalingConfig(KvScaling.FORWARD, l_min_tokens=64, watermark=0.25)
    assert plan_kv([R(20)], 30.0, alloc, forward) == 800
    # Reactive: only what the engine needs now (21 tokens -> 2 blocks), no watermark.
    reactive = KvScalingConfig(KvScaling.REACTIVE, l_min_tokens=64, watermark=0.25)
    assert plan_kv([R(20)], 30.0, alloc, reactive) == 320


def test_plan_kv_shrinks_reactive_at_once_and_forward_only_past_the_band():
    alloc = KvAllocation(kv_bytes_per_token=10, block_tokens=16, allocated_bytes=800,
                         node_free_bytes=0)  # fmt: skip
    forward = KvScalingConfig(KvScaling.FORWARD, l_min_tokens=64, watermark=0.25)
    # Idle: demand is L_min = 640 B; 640·1.25 = 800 is not below 800/1.25 = 640: keep.
    assert plan_kv([], 30.0, alloc, forward) is None
    reactive = KvScalingConfig(KvScaling.REACTIVE, l_min_tokens=64, watermark=0.25)
    assert plan_kv([], 30.0, alloc, reactive) == 0
    # Growth is capped by the node's free memory (none here): nothing to ask for.
    assert plan_kv([R(100, 10)], 30.0, alloc, forward) is None
