"""The consolidator's mechanism (DESIGN.md §4): preempt, drain and pack, carried out live.

Preemptions are planned once, by the scheduler's policy core (`preemption_plan`, which
checked that the move pays); the consolidator checks the plan still holds and carries it
out. Packing is the consolidator's own decision (`pack_plan`, with the T_pack hysteresis of
`PackWatch`, over views built from etcd: view.py). Every plan is recorded (plans.py) and,
unless advisory, carried out:

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
from dataclasses import dataclass, field
from typing import Any

import grpc
from loguru import logger

from slinfer.policy import DEFAULT_CONFIG, InstancePhase, PolicyConfig, SystemName, system_spec
from slinfer.policy.packing import PackWatch, pack_plan
from slinfer.policy.preemption import recently_moved
from slinfer.services.cluster.state import ClusterWatcher
from slinfer.services.cluster.workers import WorkerClients
from slinfer.services.common import keys
from slinfer.services.common.errors import (
    FailedPrecondition,
    InstanceNotFound,
    InvalidArgument,
)
from slinfer.services.common.records import InstanceState
from slinfer.services.common.security import Security
from slinfer.services.common.store import Store
from slinfer.services.consolidator import metrics
from slinfer.services.consolidator.plans import PlanLog, new_plan
from slinfer.services.consolidator.view import ConsolidationView
from slinfer.v1 import consolidator_pb2, worker_pb2

_PREEMPT_KINDS = (
    consolidator_pb2.PLAN_KIND_PREEMPT_MEMORY,
    consolidator_pb2.PLAN_KIND_PREEMPT_DECODE,
)


@dataclass(frozen=True, slots=True)
class ConsolidatorConfig:
    etcd: str
    listen: str = "127.0.0.1:0"
    # The system the cluster runs (the schedulers' --system): preemption and packing are on
    # only for systems with preemption (slinfer, slinfer-gpu); slinfer-no-defrag has neither.
    system: SystemName = SystemName.SLINFER
    advisory: bool = False  # log and list plans, never carry them out
    pack_every_s: float = 0.0  # packing cycle; 0: off (T_pack and the threshold: PolicyConfig)
    drain_timeout_s: float = 60.0
    unload_timeout_s: float = 60.0
    election_ttl_s: int = 5
    # Must match the schedulers' (DispatchConfig) so both see the same views.
    default_kv_capacity_tokens: int = 4096
    # Authentication and TLS (security.py): the schedulers call with the cluster token,
    # operators (drain, preempt, plans) with an admin API key.
    security: Security = field(default_factory=Security.from_env)

    def __post_init__(self) -> None:
        if self.pack_every_s < 0 or self.drain_timeout_s <= 0 or self.unload_timeout_s <= 0:
            raise ValueError("pack_every_s must be >= 0 and the timeouts > 0")
        if self.default_kv_capacity_tokens <= 0:
            raise ValueError("default_kv_capacity_tokens must be > 0")

    @property
    def preempt(self) -> bool:
        return system_spec(self.system).preempt

    @property
    def pack(self) -> bool:
        return self.preempt and self.pack_every_s > 0


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
        self.policy_config = DEFAULT_CONFIG  # the schedulers' (/slinfer/policy), once seen
        self.views = ConsolidationView(config.default_kv_capacity_tokens)
        self.pack_watch = PackWatch()
        self._lock = asyncio.Lock()

    def configure(self, policy: PolicyConfig) -> None:
        self.policy_config = policy
        self.views.prior_output_tokens = policy.prior_output_tokens

    # ---- carrying plans out ----------------------------------------------------------------

    async def _evict(self, instance_id: str) -> int:
        view = self.watcher.view
        rec = view.instances.get(instance_id)
        if rec is None:
            raise InstanceNotFound(f"no instance {instance_id} (see `slinfer status`)")
        node = view.nodes.get(rec.node_id)
        if node is None:
            raise InstanceNotFound(f"the node of instance {instance_id} is gone")
        resp = await self.workers.stub(node.address).UnloadInstance(
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

    async def carry_out_preemption(
        self, req: consolidator_pb2.PreemptionPlan
    ) -> consolidator_pb2.Plan:
        """Carry out a scheduler's plan (planned once, by the policy core), if it still holds."""
        if not self.config.preempt:
            raise FailedPrecondition(
                f"preemption is off for system {self.config.system.value}; "
                "run the consolidator with --system slinfer to enable it"
            )
        if req.kind not in _PREEMPT_KINDS:
            raise InvalidArgument("kind must be PLAN_KIND_PREEMPT_MEMORY or _DECODE")
        async with self._lock:
            cluster = self.watcher.view
            victim = self.views.instance(cluster, req.victim_instance_id)
            if victim is None or victim.phase is not InstancePhase.READY:
                raise FailedPrecondition(
                    f"victim {req.victim_instance_id} is gone or not ready; decide again"
                )
            if recently_moved(victim, time.time(), self.policy_config):
                raise FailedPrecondition(
                    f"victim {req.victim_instance_id} was moved less than "
                    f"{self.policy_config.move_cooldown_s:.0f} s ago (T_move); decide again"
                )
            plan = new_plan(
                req.kind,
                [req.victim_instance_id],
                target=req.target_instance_id,
                node_id=victim.node_id,
                destination=(req.destination_node_id, req.destination_instance_id),
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
            if rec.state is not InstanceState.READY:
                # DESIGN.md §4: never evict an instance that is loading (or already leaving).
                raise FailedPrecondition(
                    f"instance {instance_id} is {rec.state.value}; only ready instances "
                    "can be preempted"
                )
            plan = new_plan(
                consolidator_pb2.PLAN_KIND_PREEMPT_OPERATOR,
                [instance_id],
                node_id=rec.node_id,
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
                iid = rec.instance_id
                if rec.state is not InstanceState.READY:
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
            victims = [i.instance_id for i in self.watcher.view.instances_on(node_id)]
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
        """One packing cycle (DESIGN.md §4): empty a node that stayed below the threshold for
        T_pack and whose requests fit on resident instances elsewhere; none while any
        request waits for capacity."""
        if not self.config.pack or not self.is_leader():
            return None
        async with self._lock:
            cluster = self.watcher.view
            metrics.NODES_IN_USE.set(len(cluster.nodes_in_use()))
            now = time.time()
            pools = self.views.pools(cluster)
            every = [d for pool in pools.values() for d in pool]
            self.pack_watch.observe(every, now, self.policy_config)
            waiting = cluster.waiting_requests()
            for devices in pools.values():
                dp = pack_plan(devices, now, self.pack_watch, waiting, self.policy_config)
                if dp is None:
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
