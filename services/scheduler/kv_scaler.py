"""The scheduler's forward-looking KV scaling (DESIGN.md §3), carried out through the ledger.

The scheduler owns the requests, so it knows each instance's forward-looking demand. On
admission it sends the target the policy's decision carries (`decide` → `kv_target`, which is
`plan_kv`); on every token batch and when a request finishes it asks `plan_kv` again
(slinfer/policy/kv_scaling.py, the rule the simulator applies at the same moments) whether
the instance's KV allocation should move, and if so sends `ScaleKV` with the instance
revision it decided on.
A stale revision (another caller moved the instance meanwhile) is re-read and the decision
taken again. The worker applies approvals between iterations; deferred increases wait in the
ledger until a neighbour's decrease completes.

Without a registered memory service this does nothing (docs/MEMORY.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import grpc
from loguru import logger

from slinfer.policy import DeviceKind, PolicyConfig
from slinfer.policy.kv_scaling import KvAllocation, plan_kv
from slinfer.policy.ledger import LedgerOp
from slinfer.services.cluster.state import ClusterWatcher
from slinfer.services.cluster.tracker import Tracker
from slinfer.services.common.engine_types import EngineKind
from slinfer.services.common.errors import NeverFits
from slinfer.services.common.model_dir import ModelDir, node_dtype_bytes
from slinfer.services.common.records import InstanceRecord, InstanceState, ModelRecord, NodeRecord
from slinfer.services.memory.client import MemoryClient
from slinfer.v1 import memory_pb2

KV_BLOCK_TOKENS = 16  # the PyTorch engine's KV block (torch_config.TorchEngineConfig)
_REFRESH = (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED)


def memory_service_present(watcher: ClusterWatcher) -> bool:
    return any(name.startswith("memory/") for name in watcher.view.services)


class KvScaler:
    def __init__(
        self,
        watcher: ClusterWatcher,
        tracker: Tracker,
        client: MemoryClient,
        config: PolicyConfig,
    ):
        self.watcher, self.tracker, self.client, self.config = watcher, tracker, client, config
        self._known: dict[str, tuple[int, int]] = {}  # instance -> (revision, planned KV)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._decided: dict[str, int] = {}  # instance -> target an admission decided
        self.statuses: Counter[str] = Counter()  # ScaleKV answers, for tests and the bench

    @property
    def enabled(self) -> bool:
        """A memory service is registered (without one, nothing here acts)."""
        return memory_service_present(self.watcher)

    def touch(self, instance_id: str) -> None:
        """Re-evaluate the instance soon; one evaluation in flight per instance."""
        if not self.enabled:
            return
        if instance_id in self._tasks:
            self._again.add(instance_id)
            return
        task = asyncio.create_task(self._loop(instance_id), name=f"kv-scale:{instance_id}")
        self._tasks[instance_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(instance_id, None))

    def request(self, instance_id: str, target_bytes: int) -> None:
        """Ask the ledger for the allocation an admission decided, in the instance's one
        evaluation loop (so it never races a re-evaluation); later touches use `plan_kv`."""
        if not self.enabled:
            return
        self._decided[instance_id] = target_bytes
        self.touch(instance_id)

    async def _loop(self, instance_id: str) -> None:
        while True:
            self._again.discard(instance_id)
            with contextlib.suppress(Exception):
                await self.scale(instance_id, self._decided.pop(instance_id, None))
            if instance_id not in self._again:
                return

    async def stop(self) -> None:
        for t in list(self._tasks.values()):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def _allocation(
        self, rec: InstanceRecord, node_planned_now: int | None = None
    ) -> tuple[KvAllocation, int] | None:
        book = self.watcher.view.ledgers.get(rec.node_id)
        info = book.get("instances", {}).get(rec.instance_id) if book else None
        if book is None or info is None:
            return None
        revision, planned_kv = int(info["revision"]), int(info["planned_kv_bytes"])
        node_planned = int(book["planned_bytes"])
        known = self._known.get(rec.instance_id)
        if known is not None and known[0] > revision:  # our own answer is newer than the watch
            node_planned += known[1] - planned_kv
            revision, planned_kv = known
        if node_planned_now is not None:  # the ledger's own figure, from a refusal just now
            node_planned = node_planned_now
        alloc = KvAllocation(
            kv_bytes_per_token=max(rec.kv_bytes_per_token, 1),
            block_tokens=rec.kv_block_tokens or KV_BLOCK_TOKENS,
            allocated_bytes=planned_kv,
            node_free_bytes=int(book["capacity_bytes"]) - node_planned,
        )
        return alloc, revision

    async def scale(self, instance_id: str, decided: int | None = None) -> str | None:
        """Ask the ledger for the instance's KV target (`decided`, or `plan_kv` now); returns
        the ledger status, if asked."""
        node_planned_now: int | None = None
        for _ in range(3):
            rec = self.watcher.view.instances.get(instance_id)
            if rec is None:
                self._known.pop(instance_id, None)  # gone: forget what we knew of it
                return None
            if rec.state is not InstanceState.READY or not rec.kv_resizable:
                return None
            found = self._allocation(rec, node_planned_now)
            if found is None:
                return None
            alloc, revision = found
            requests = self.tracker.load_on(instance_id)
            mean = self.tracker.mean_output(rec.model_id, self.watcher.view.outputs)
            target = decided if decided is not None else plan_kv(requests, mean, alloc, self.config)
            decided = None  # a refusal below means the view trailed: re-plan on the fresh one
            if target is None:
                return None
            try:
                resp = await self.client.change(
                    rec.node_id, instance_id, LedgerOp.KV_RESIZE, kv_bytes=target,
                    revision=revision,
                )  # fmt: skip
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _REFRESH:
                    raise
                self.statuses["stale"] += 1
                rev = await self.client.revision(rec.node_id, instance_id)
                book = await self.client.ledger(rec.node_id)
                kv = next(
                    (i.planned_kv_bytes for i in book.instances if i.instance_id == instance_id),
                    0,
                )
                self._known[instance_id] = (rev, kv)
                continue
            status = memory_pb2.LedgerStatus.Name(resp.status).removeprefix("LEDGER_STATUS_")
            self.statuses[status.lower()] += 1
            if resp.status == memory_pb2.LEDGER_STATUS_REJECTED:
                # The watch trailed the ledger: decide again on the node's planned bytes now.
                node_planned_now = int(resp.node_planned_bytes)
                continue
            self._known[instance_id] = (resp.revision, target)
            logger.info(
                "kv scale instance={} {} -> {} bytes ({} requests): {}",
                instance_id,
                alloc.allocated_bytes,
                target,
                len(requests),
                status.lower(),
            )
            return status.lower()
        return None

    def check_fits(
        self,
        model: ModelRecord,
        info: ModelDir,
        measured: tuple[int, int] | None,
        tokens: int,
    ) -> None:
        """Refuse at once a request whose context (prompt + max_tokens) cannot fit on any
        node even alone: waiting for capacity could never help. `measured`: (weights bytes,
        KV bytes per token) a loaded instance reported; before that, each node's estimate
        at its engines' dtype (`dtype_bytes` in its record)."""
        if not self.enabled:
            return
        want = model.device
        nodes = [
            n
            for n in self.watcher.view.nodes.values()
            if (want is None or n.kind is want)
            and not (model.engine is EngineKind.TORCH and n.kind is not DeviceKind.CPU)
        ]
        if not nodes:
            return

        def need(node: NodeRecord) -> int:
            if measured is not None:
                return measured[0] + measured[1] * tokens
            return info.estimate_bytes(tokens, node_dtype_bytes(node))

        if all(need(n) > n.memory_bytes for n in nodes):
            smallest = min(need(n) for n in nodes)
            largest = max(n.memory_bytes for n in nodes)
            raise NeverFits(
                f"request can never fit: model {model.model_id} needs {smallest >> 10} KiB "
                f"(weights + KV for prompt + max_tokens = {tokens} tokens) and the largest "
                f"node offers {largest >> 10} KiB; lower max_tokens, shorten the prompt or add "
                "a node with more memory"
            )
