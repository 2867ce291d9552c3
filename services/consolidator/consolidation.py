"""The consolidator's mechanism (DESIGN.md §4): preempt, drain and pack, carried out live.

Each operation builds the policy's plain view from etcd (view.py), asks the policy module
(`slinfer.policy.preemption`, the same module the simulator drives through the policy
core) for a plan, records it (plans.py) and, unless advisory, carries it out:

- evict: `Worker.UnloadInstance(preempt=true)`: the instance stops taking requests, its
  streams end PREEMPTED and their schedulers re-dispatch them with their tokens so far, and
  the worker unloads it through its one unload path (KV and weights released there);
- drain: mark the node draining (`/slinfer/drain/{node}`; placement and routing skip it),
  evict every instance on it, and wait until the node hosts nothing.

Operations are serialised by one lock: two plans never pick the same victim or count on the
same freed room.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from loguru import logger

import slinfer.policy.preemption as consolidation_policy
from slinfer.policy import InstancePhase, PolicyConfig, SystemName, system_spec
from slinfer.policy.routing import busiest_first
from slinfer.services.common import keys
from slinfer.services.common.errors import (
    FailedPrecondition,
    InstanceNotFound,
    InvalidArgument,
    ModelNotFound,
)
from slinfer.services.common.store import Store
from slinfer.services.consolidator import metrics
from slinfer.services.consolidator.plans import PlanLog, new_plan
from slinfer.services.consolidator.view import ConsolidationView
from slinfer.services.scheduler.state import ClusterWatcher
from slinfer.services.scheduler.tracker import LiveRequest
from slinfer.services.scheduler.workers import WorkerClients
from slinfer.v1 import consolidator_pb2, worker_pb2

_PREEMPT_KINDS = {
    consolidation_policy.PreemptKind.MEMORY: consolidator_pb2.PLAN_KIND_PREEMPT_MEMORY,
    consolidation_policy.PreemptKind.DECODE: consolidator_pb2.PLAN_KIND_PREEMPT_DECODE,
}


@dataclass(frozen=True, slots=True)
class ConsolidatorConfig:
    etcd: str
    listen: str = "127.0.0.1:0"
    # The system the cluster runs (the schedulers' --system): preemption and packing are on
    # only for systems with preemption (slinfer, slinfer-gpu); slinfer-no-defrag has neither.
    system: SystemName = SystemName.SLINFER
    advisory: bool = False  # log and list plans, never carry them out
    pack_every_s: float = 0.0  # periodic bin-packing interval; 0: off
    drain_timeout_s: float = 60.0
    unload_timeout_s: float = 60.0
    election_ttl_s: int = 5
    # Must match the schedulers' (DispatchConfig) so both see the same views.
    default_kv_capacity_tokens: int = 4096
    l_min_tokens: int = 1024

    def __post_init__(self) -> None:
        if self.pack_every_s < 0 or self.drain_timeout_s <= 0 or self.unload_timeout_s <= 0:
            raise ValueError("pack_every_s must be >= 0 and the timeouts > 0")
        if self.default_kv_capacity_tokens <= 0 or self.l_min_tokens < 0:
            raise ValueError("default_kv_capacity_tokens > 0 and l_min_tokens >= 0 required")

    @property
    def preempt(self) -> bool:
        return system_spec(self.system).preempt

    @property
    def pack(self) -> bool:
        return self.preempt and self.pack_every_s > 0


def _pending(pb: consolidator_pb2.PendingRequest, model_id: str) -> LiveRequest:
    if pb.input_tokens <= 0:
        raise InvalidArgument("request.input_tokens must be > 0")
    return LiveRequest(
        request_id=pb.request_id or "pending",
        model_id=model_id,
        arrival_s=pb.arrival_unix_s or time.time(),
        input_tokens=pb.input_tokens,
        ttft_slo_s=pb.ttft_slo_s or 0.5,
        tpot_slo_s=pb.tpot_slo_s or 0.25,
        excused_s=pb.excused_s,
        output_tokens=pb.output_tokens,
    )


class Consolidation:
    def __init__(
        self,
        config: ConsolidatorConfig,
        store: Store,
        watcher: ClusterWatcher,
        workers: WorkerClients,
        is_leader: Callable[[], bool],
        service_id: str = "",
    ):
        self.config = config
        self.store, self.watcher, self.workers = store, watcher, workers
        self.is_leader = is_leader
        self.service_id = service_id
        self.plans = PlanLog()
        self.views = ConsolidationView(config.default_kv_capacity_tokens)
        self.policy_config = PolicyConfig(l_min_tokens=config.l_min_tokens)
        self._lock = asyncio.Lock()

    # ---- carrying plans out ----------------------------------------------------------------

    async def _evict(self, instance_id: str) -> int:
        view = self.watcher.view
        rec = view.instances.get(instance_id)
        if rec is None:
            raise InstanceNotFound(f"no instance {instance_id} (see `slinfer status`)")
        node = view.nodes.get(rec.get("node_id", ""))
        if node is None:
            raise InstanceNotFound(f"the node of instance {instance_id} is gone")
        resp = await self.workers.stub(node["address"]).UnloadInstance(
            worker_pb2.UnloadInstanceRequest(instance_id=instance_id, preempt=True),
            timeout=self.config.unload_timeout_s,
        )
        # Read-your-writes: later plans must not count the victim's room twice.
        await self.watcher.wait_for(lambda v: instance_id not in v.instances, 5.0)
        return int(resp.requests_aborted)

    async def _carry_out(self, plan: consolidator_pb2.Plan) -> None:
        errors = []
        for victim in plan.victim_instance_ids:
            try:
                plan.requests_moved += await self._evict(victim)
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{victim}: {exc.code().name} {exc.details()}")
            except InstanceNotFound as exc:
                errors.append(str(exc))
        plan.error = "; ".join(errors)
        plan.executed = not errors

    # ---- preemption --------------------------------------------------------------------------

    async def plan_preemption(
        self, req: consolidator_pb2.PlanPreemptionRequest
    ) -> consolidator_pb2.Plan:
        if not self.config.preempt:
            raise FailedPrecondition(
                f"preemption is off for system {self.config.system.value}; "
                "run the consolidator with --system slinfer to enable it"
            )
        async with self._lock:
            cluster = self.watcher.view
            model = cluster.models.get(req.model_id)
            if model is None:
                raise ModelNotFound(f"model {req.model_id} is not deployed")
            request = _pending(req.request, req.model_id)
            view = self.views.dispatch_view(cluster, model)
            live = [c for c in view.candidates if c.phase is not InstancePhase.RELEASING]
            by_id = {c.instance_id: c for c in live}
            ordered = [by_id[i] for i in req.candidate_instance_ids if i in by_id]
            ordered += [c for c in busiest_first(live) if c not in ordered]
            decision = consolidation_policy.preemption_plan(
                view.devices, ordered, request, time.time(), self.policy_config
            )
            if decision is None:
                raise InstanceNotFound(
                    f"no single preemption opens an instance of {req.model_id} for "
                    f"request {request.request_id} (no co-located instance that is ready, no "
                    "busier than the target and large enough)"
                )
            target = next(c for c in ordered if c.instance_id == decision.target_instance_id)
            plan = new_plan(
                _PREEMPT_KINDS[decision.kind],
                [decision.victim_instance_id],
                target=decision.target_instance_id,
                node_id=target.node_id,
                gap=float(decision.gap),
                advisory=self.config.advisory,
            )
            if not plan.advisory:
                await self._carry_out(plan)
            return self.plans.record(plan)

    async def preempt(self, instance_id: str) -> consolidator_pb2.Plan:
        async with self._lock:
            rec = self.watcher.view.instances.get(instance_id)
            if rec is None:
                raise InstanceNotFound(f"no instance {instance_id} (see `slinfer status`)")
            if rec.get("state") != "ready":
                # DESIGN.md §4: never evict an instance that is loading (or already leaving).
                raise FailedPrecondition(
                    f"instance {instance_id} is {rec.get('state')}; only ready instances "
                    "can be preempted"
                )
            plan = new_plan(
                consolidator_pb2.PLAN_KIND_PREEMPT_OPERATOR,
                [instance_id],
                node_id=str(rec.get("node_id", "")),
                advisory=self.config.advisory,
            )
            if not plan.advisory:
                await self._carry_out(plan)
            return self.plans.record(plan)

    # ---- drain and packing -------------------------------------------------------------------

    async def _empty_node(self, plan: consolidator_pb2.Plan, reason: str, timeout_s: float) -> None:
        node_id = plan.node_id
        mark = {"node_id": node_id, "since": time.time(), "by": self.service_id, "reason": reason}
        await self.store.put(keys.drain(node_id), mark)
        self.watcher.view.apply(keys.drain(node_id), mark)
        deadline = time.monotonic() + timeout_s
        errors: dict[str, str] = {}
        while time.monotonic() < deadline:
            left = self.watcher.view.instances_on(node_id)
            if not left:
                break
            for rec in left:
                iid = rec["instance_id"]
                if rec.get("state") != "ready":
                    continue  # loading: evict once it is ready; unloading: on its way out
                if iid not in plan.victim_instance_ids:
                    plan.victim_instance_ids.append(iid)
                try:
                    plan.requests_moved += await self._evict(iid)
                    errors.pop(iid, None)
                except (grpc.aio.AioRpcError, InstanceNotFound) as exc:
                    detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
                    errors[iid] = str(detail)
            await self.watcher.wait_for(lambda v: not v.instances_on(node_id), 0.5)
        left = self.watcher.view.instances_on(node_id)
        if left:
            plan.error = (
                f"node {node_id} still hosts {len(left)} instance(s) after {timeout_s:.0f} s"
                + (f": {'; '.join(f'{k}: {v}' for k, v in errors.items())}" if errors else "")
            )
        plan.executed = not left

    async def drain(
        self, node_id: str, undo: bool = False, timeout_s: float = 0.0
    ) -> consolidator_pb2.Plan:
        if not keys.valid_name(node_id):
            raise InvalidArgument("node_id must be 1-64 of [A-Za-z0-9._-]")
        if undo:
            plan = new_plan(consolidator_pb2.PLAN_KIND_UNDRAIN, node_id=node_id)
            await self.store.delete(keys.drain(node_id))
            self.watcher.view.apply(keys.drain(node_id), None)
            plan.executed = True
            return self.plans.record(plan)
        async with self._lock:
            if node_id not in self.watcher.view.nodes:
                raise InstanceNotFound(f"no node {node_id} (see `slinfer status`)")
            victims = [i["instance_id"] for i in self.watcher.view.instances_on(node_id)]
            plan = new_plan(
                consolidator_pb2.PLAN_KIND_DRAIN,
                victims,
                node_id=node_id,
                advisory=self.config.advisory,
            )
            if not plan.advisory:
                await self._empty_node(plan, "operator", timeout_s or self.config.drain_timeout_s)
            return self.plans.record(plan)

    async def pack_once(self) -> consolidator_pb2.Plan | None:
        """One bin-packing cycle: empty the least loaded node whose instances fit elsewhere."""
        if not self.config.pack or not self.is_leader():
            return None
        async with self._lock:
            cluster = self.watcher.view
            metrics.NODES_IN_USE.set(len(cluster.nodes_in_use()))
            for devices in self.views.pools(cluster).values():
                dp = consolidation_policy.drain_plan(devices, self.policy_config)
                if dp is None or not dp.moves:
                    continue
                plan = new_plan(
                    consolidator_pb2.PLAN_KIND_PACK,
                    [m.instance_id for m in dp.moves],
                    node_id=dp.node_id,
                    advisory=self.config.advisory,
                )
                if not plan.advisory:
                    try:
                        await self._empty_node(plan, "pack", self.config.drain_timeout_s)
                    finally:  # a packed node is free again for future placements
                        await self.store.delete(keys.drain(dp.node_id))
                        self.watcher.view.apply(keys.drain(dp.node_id), None)
                return self.plans.record(plan)
        return None

    def status(self) -> dict[str, Any]:
        return {"leader": self.is_leader(), "advisory": self.config.advisory}

    async def pack_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.pack_every_s or 1.0)
            try:
                await self.pack_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one failed cycle must not stop packing
                logger.warning("packing cycle failed: {}", exc)
