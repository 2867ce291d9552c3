"""The worker's side of the memory ledger (DESIGN.md §3, docs/MEMORY.md).

- A load is planned through the ledger first (weights + initial KV, fp32 upper bounds); the
  engine is built only once both are approved, then the worker reports the bytes it actually
  allocated and corrects the plan down to them.
- The agent watches the node's action queue (`memory/{node}` in etcd) and carries out each
  approved KV resize between the instance's iterations (on the device thread), then reports
  completion with the measured bytes; a shrink that live requests do not allow yet is retried
  on the next cycle (it stays "actual" in the ledger meanwhile, so nothing is oversubscribed).
- Every unload releases through the ledger (evict, then completion), whoever asked for it.

So the worker never allocates beyond what was approved: its measured bytes stay within the
node's `memory_bytes`. With no memory service registered, the worker checks its measured free
memory at load instead (the behaviour before the memory service).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from loguru import logger

from slinfer.policy.ledger import LedgerOp
from slinfer.services.common import keys
from slinfer.services.common.errors import NoCapacity
from slinfer.services.common.model_dir import inspect_model_dir
from slinfer.services.common.records import InstanceState
from slinfer.services.memory.client import MemoryClient
from slinfer.services.worker.engine.base import Engine, EngineRequest, KVCapacityExceeded
from slinfer.services.worker.instance import Instance
from slinfer.v1 import memory_pb2

if TYPE_CHECKING:
    from slinfer.services.worker.node import NodeContext

_DEFERRED = memory_pb2.LEDGER_STATUS_DEFERRED
_REJECTED = memory_pb2.LEDGER_STATUS_REJECTED


@dataclass
class MemoryCounters:
    """What the memory benchmark and the live tests read off a worker."""

    resizes: int = 0  # KV resizes carried out
    resize_s: float = 0.0  # device time spent resizing
    lifetime_s: float = 0.0  # summed lifetime of unloaded instances
    kv_refusals: int = 0  # requests refused because the KV pool had no room
    kv_pressure_events: int = 0  # preemptions / truncations of unloaded instances' engines
    peak_measured_bytes: int = 0  # max weights + KV actually allocated, after every change
    deferred_loads: int = 0


class MemoryAgent:
    def __init__(self, node: NodeContext, load_wait_s: float = 60.0, kv_wait_s: float = 10.0):
        self.w = node
        self.client = MemoryClient(node.store)
        self.book: dict[str, Any] = {}  # the node's memory/{node} document, as last seen
        self.changed = asyncio.Condition()
        self.applied: dict[str, int] = {}  # instance -> last revision reported complete
        self.born: dict[str, float] = {}
        self.counters = MemoryCounters()
        self.load_wait_s, self.kv_wait_s = load_wait_s, kv_wait_s
        self._planned: set[str] = set()  # instances whose memory went through the ledger
        self._lock = asyncio.Lock()
        self._kick = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def node_id(self) -> str:
        return self.w.node_id

    # ---- measured memory ---------------------------------------------------------------------

    def used_bytes(self) -> int:
        used = 0
        for inst in self.w.instances.values():
            if inst.stats is not None:
                used += inst.stats.weights_bytes + inst.stats.kv_bytes_allocated
        return used

    def ledger_bytes(self) -> int:
        return int(self.book.get("actual_bytes", 0))

    def _measure(self) -> None:
        self.counters.peak_measured_bytes = max(
            self.counters.peak_measured_bytes, self.used_bytes()
        )

    def check_fits(self, path: str, kv_capacity_tokens: int, why: str = "") -> None:
        """Without a memory service: the measured free memory must hold the upper bound."""
        need = inspect_model_dir(path).estimate_bytes(kv_capacity_tokens, self.w.dtype_bytes)
        free = self.w.config.memory_bytes - self.used_bytes()
        if need > free:
            raise NoCapacity(
                f"node {self.node_id} has {free >> 20} MiB free, instance needs about "
                f"{need >> 20} MiB (weights + {kv_capacity_tokens} KV tokens)"
                + (f" ({why})" if why else "")
            )

    def totals(self) -> MemoryCounters:
        """The counters with the still-loaded instances' lifetimes and KV pressure added."""
        now, c = time.monotonic(), self.counters
        live = [i for i in self.w.instances.values() if i.instance_id in self.born]
        return MemoryCounters(
            resizes=c.resizes,
            # + the background rebuilds of engines that resize by rebuilding (OpenVINO)
            resize_s=c.resize_s + sum(_rebuild_s(i.engine) for i in live),
            lifetime_s=c.lifetime_s + sum(now - self.born[i.instance_id] for i in live),
            kv_refusals=c.kv_refusals,
            kv_pressure_events=c.kv_pressure_events
            + sum(i.stats.kv_pressure_events for i in live if i.stats is not None),
            peak_measured_bytes=c.peak_measured_bytes,
            deferred_loads=c.deferred_loads,
        )

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._watch(), name="memory-watch"),
            asyncio.create_task(self._tick(), name="memory-tick"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.client.close()

    async def _watch(self) -> None:
        key = keys.memory(self.node_id)
        while True:
            try:
                entries, revision = await self.w.store.list(key)
                await self._seen(next((e.value for e in entries if e.key == key), {}))
                async for ev in self.w.store.watch(key, revision + 1):
                    if ev.key == key:  # the prefix also matches longer node ids
                        await self._seen(ev.value or {})
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("memory watch of {} interrupted ({}); again", self.node_id, exc)
                await asyncio.sleep(0.5)

    async def _seen(self, book: dict[str, Any]) -> None:
        self.book = book
        async with self.changed:
            self.changed.notify_all()
        self._kick.set()

    async def _tick(self, every_s: float = 0.5) -> None:
        """Reconcile on every change of the book, and periodically (level-triggered: a
        shrink that live requests blocked is retried)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), every_s)
            self._kick.clear()
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad cycle must not stop the agent
                logger.warning("memory reconcile on {} failed: {}", self.node_id, exc)

    async def _wait(self, predicate: Any, timeout_s: float) -> bool:
        async def _until() -> None:
            async with self.changed:
                await self.changed.wait_for(predicate)

        try:
            await asyncio.wait_for(_until(), timeout_s)
            return True
        except TimeoutError:
            return False

    # ---- loads and unloads -------------------------------------------------------------------

    async def plan_load(self, inst: Instance) -> None:
        """Plan weights + initial KV; returns once both are approved (raises NoCapacity).
        A registered memory service that does not answer is treated as absent: the load is
        checked against this node's measured free memory, as without one, and says so."""
        try:
            await self._plan_load(inst)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            self._planned.discard(inst.instance_id)
            logger.warning(
                "memory service unreachable ({}); load of instance={} checked against node "
                "{}'s measured memory instead",
                exc.details(),
                inst.instance_id,
                self.node_id,
            )
            self.check_fits(
                inst.path,
                inst.kv_capacity_tokens,
                "the memory service, which plans every load, is unreachable: checked against "
                "the node's measured memory",
            )

    async def _plan_load(self, inst: Instance) -> None:
        if not await self.client.available():
            self.check_fits(inst.path, inst.kv_capacity_tokens)
            return
        info = inspect_model_dir(inst.path)
        # The node's engine dtype plus room for buffers (RoPE tables stay fp32); corrected to
        # the measured bytes after load.
        width = self.w.dtype_bytes
        weights = info.weights_bytes(width) * 101 // 100 + (64 << 10)
        kv = inst.kv_capacity_tokens * info.kv_bytes_per_token(width)
        iid, node = inst.instance_id, self.node_id
        self._planned.add(iid)
        load = await self.client.change(node, iid, LedgerOp.LOAD, weights_bytes=weights)
        resp = load
        if load.status != _REJECTED:
            resp = await self.client.change(
                node, iid, LedgerOp.KV_RESIZE, kv_bytes=kv, revision=load.revision
            )
        if resp.status == _REJECTED:
            raise NoCapacity(f"node {node} cannot host instance {iid}: {resp.message}")
        if resp.status == _DEFERRED:
            self.counters.deferred_loads += 1
            logger.info("load of instance={} deferred on node={}", iid, node)
            if not await self._wait(lambda: self._approved(iid, resp.revision), self.load_wait_s):
                raise NoCapacity(
                    f"node {node} could not free {(weights + kv) >> 10} KiB for instance {iid} "
                    f"within {self.load_wait_s:.0f} s; retry on another node"
                )

    def manages(self, iid: str) -> bool:
        """Is the instance's memory planned through the ledger (its KV resized as its
        requests grow)? Decided at load, for the instance's whole life."""
        return iid in self._planned

    def _approved(self, iid: str, revision: int) -> bool:
        info = self.book.get("instances", {}).get(iid)
        return info is not None and info["revision"] >= revision and not info["deferred"]

    async def settle_load(self, inst: Instance) -> None:
        """Report the loaded instance's measured bytes; correct the plan down to them."""
        self.born[inst.instance_id] = time.monotonic()
        self._measure()
        if inst.instance_id not in self._planned or inst.stats is None:
            return
        iid, node, s = inst.instance_id, self.node_id, inst.stats
        rev = await self.client.revision(node, iid)
        await self.client.complete(node, iid, rev, s.weights_bytes, s.kv_bytes_allocated)
        book = await self.client.ledger(node)
        planned = next(i for i in book.instances if i.instance_id == iid)
        for op, have, plan in (
            (LedgerOp.LOAD, s.weights_bytes, planned.planned_weights_bytes),
            (LedgerOp.KV_RESIZE, s.kv_bytes_allocated, planned.planned_kv_bytes),
        ):
            if have != plan:  # the fp32 estimate is close, not exact (buffers, dtype)
                r = await self.client.change(
                    node, iid, op, weights_bytes=have, kv_bytes=have, revision=None
                )
                if r.status == _DEFERRED:
                    logger.warning("instance={} allocated {} > planned {}", iid, have, plan)
                    continue  # the worker reports it when the ledger lets it through
                rev = r.revision
                await self.client.complete(node, iid, rev, s.weights_bytes, s.kv_bytes_allocated)
        self.applied[iid] = rev

    async def release(self, inst: Instance) -> None:
        """The instance's memory is free (engine closed): evict it from the ledger."""
        iid = inst.instance_id
        born = self.born.pop(iid, None)
        if born is not None:
            self.counters.lifetime_s += time.monotonic() - born
        if inst.stats is not None:
            self.counters.kv_pressure_events += inst.stats.kv_pressure_events
        self.counters.resize_s += _rebuild_s(inst.engine)
        self.applied.pop(iid, None)
        if iid not in self._planned:
            return
        self._planned.discard(iid)
        try:
            r = await self.client.change(self.node_id, iid, LedgerOp.EVICT)
            await self.client.complete(self.node_id, iid, r.revision, 0, 0)
        except grpc.aio.AioRpcError as exc:
            # The plan stays until the worker's next incarnation; say so, do not hide it.
            logger.error("ledger release of instance={} failed: {}", iid, exc.details())

    # ---- KV resizes --------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Carry out the newest approved action of each ready instance, report completion."""
        async with self._lock:
            latest: dict[str, dict[str, Any]] = {}
            for action in self.book.get("actions", []):
                iid = action["instance_id"]
                if action["revision"] > latest.get(iid, {}).get("revision", 0):
                    latest[iid] = action
            for iid, action in latest.items():
                inst = self.w.instances.get(iid)
                if (
                    inst is None
                    or inst.state is not InstanceState.READY
                    or inst.engine is None
                    or action["revision"] <= self.applied.get(iid, 0)
                    or int(action["weights_bytes"]) == 0
                ):
                    continue  # loads, offloads and unloads report their own actions
                try:
                    await self._resize(inst, int(action["kv_bytes"]))
                except KVCapacityExceeded as exc:
                    logger.debug("shrink of {} waits for requests to leave: {}", iid, exc)
                    continue
                s = inst.stats
                assert s is not None
                resp = await self.client.complete(
                    self.node_id, iid, action["revision"], s.weights_bytes, s.kv_bytes_allocated
                )
                self.applied[iid] = action["revision"]
                if resp.released:
                    logger.info("completion of {} released {}", iid, len(resp.released))

    async def _resize(self, inst: Instance, kv_bytes: int) -> None:
        engine, s = inst.engine, inst.stats
        assert engine is not None and s is not None
        bpt = max(s.kv_bytes_per_token, 1)
        block = int(
            getattr(getattr(engine, "kv_spec", None), "block_size", None)
            or getattr(engine, "block_size", None)
            or 1
        )
        tokens = (kv_bytes // bpt) // block * block  # never beyond the approval
        if s.kv_resizable and tokens != s.kv_capacity_tokens:
            # Timed on the device thread: the wait for the running iteration is not resize work.
            self.counters.resize_s += await self.w.device.call(_timed_resize, engine, tokens)
            self.counters.resizes += 1
            inst.stats = await self.w.device.call(engine.stats)
            self._measure()
            self.w.device.wake()  # requests waiting for KV may run now
            with contextlib.suppress(Exception):
                await self.w.publish(inst)
            logger.info(
                "resized KV instance={} {} -> {} tokens",
                inst.instance_id,
                s.kv_capacity_tokens,
                tokens,
            )

    async def add_request(self, inst: Instance, request: EngineRequest) -> None:
        """Admit into the engine; when the pool is full but a resize of this instance is
        approved or deferred, wait for it (bounded) instead of refusing at once."""
        engine = inst.engine
        assert engine is not None
        deadline = time.monotonic() + self.kv_wait_s
        while True:
            try:
                await self.w.device.call(engine.add_request, request)
                return
            except KVCapacityExceeded:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._resize_pending(inst.instance_id):
                    self.counters.kv_refusals += 1
                    raise
                await asyncio.sleep(min(remaining, 0.05))

    def _resize_pending(self, iid: str) -> bool:
        if iid in self.book.get("deferred", []):
            return True
        done = self.applied.get(iid, 0)
        return any(
            a["instance_id"] == iid and a["revision"] > done for a in self.book.get("actions", [])
        )


def _timed_resize(engine: Engine, tokens: int) -> float:
    t0 = time.perf_counter()
    engine.resize_kv(tokens)
    return time.perf_counter() - t0


def _rebuild_s(engine: Engine | None) -> float:
    return float(getattr(engine, "resize_s", 0.0)) if engine is not None else 0.0
