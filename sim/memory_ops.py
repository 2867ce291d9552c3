"""Instances and memory in the simulator: the memory service's side (DESIGN.md §3).

Every footprint change goes through the node's `Ledger` (services/memory/policy.py), exactly as
the live memory service will: loads, KV resizes from the watermark rule, evictions. An approved
change is carried out by the simulated worker between its iterations (at once when the instance
is not running, else at the end of the running grant), then reported with `complete`, which
releases deferred increases in queue order.
"""

from __future__ import annotations

from slinfer.policy.kv_scaling import (
    Approval,
    LedgerOp,
    LedgerRequest,
    LedgerStatus,
    engine_need_bytes,
    kv_demand,
    watermark_may_move,
    watermark_target,
)
from slinfer.policy.systems import Sharing
from slinfer.policy.types import InstancePhase
from slinfer.sim.events import Phase
from slinfer.sim.state import RequestState, SimInstance, SimNode, SimRequest
from slinfer.sim.world import World


class MemoryOps(World):
    # -- instances ---------------------------------------------------------------------------
    def create_instance(self, node: SimNode, model_id: str, kv_bytes: int | None) -> SimInstance:
        key = (node.kind, node.label)
        inst = SimInstance(
            self.new_instance_id(model_id, node),
            model_id,
            node,
            self.spec,
            self.perf_by_label[key],
            self.engine_by_label[key],
            self.histories[model_id],
            self.config.slo.tpot_s,
            self.now,
        )
        if not node.instances:
            self.usage.change(node.kind, +1, self.now)
        node.instances.append(inst)
        self.by_model[model_id].append(inst)
        self.instances[inst.instance_id] = inst
        self.counters.loads += 1
        self.submit(inst, LedgerOp.LOAD, weights_bytes=self.spec.weights_bytes)
        if kv_bytes is not None:
            self.submit(inst, LedgerOp.KV_RESIZE, kv_bytes=kv_bytes)
        return inst

    def submit(
        self, inst: SimInstance, op: LedgerOp, weights_bytes: int = 0, kv_bytes: int = 0
    ) -> LedgerStatus:
        ledger = inst.node.ledger
        revision = ledger.revision(inst.instance_id)
        request_id = f"{inst.instance_id}#{revision + 1}"
        outcome = ledger.submit(
            LedgerRequest(request_id, inst.instance_id, op, revision, weights_bytes, kv_bytes)
        )
        if op is LedgerOp.KV_RESIZE and outcome.status in (
            LedgerStatus.APPLIED,
            LedgerStatus.DEFERRED,
        ):
            self.counters.resize_events += 1
            if outcome.status is LedgerStatus.DEFERRED:
                self.counters.deferred_resizes += 1
        self.apply_approvals(outcome.approvals)
        return outcome.status

    def apply_approvals(self, approvals: tuple[Approval, ...]) -> None:
        for approval in approvals:
            inst = self.instances[approval.instance_id]
            if inst.node.running is inst:
                self.plans_pending[inst.instance_id] = approval  # between iterations only
            else:
                self.perform(inst, approval)

    def perform(self, inst: SimInstance, approval: Approval) -> None:
        """The worker brings the instance to the approved footprint, then reports it."""
        node = inst.node
        footprint = approval.footprint
        inst.kv_granted_bytes = footprint.kv_bytes
        if footprint.weights_bytes > 0 and not inst.weights_resident and inst.load_start_s is None:
            self.start_load(inst)
        elif footprint.weights_bytes == 0:
            inst.weights_resident = False
        more = node.ledger.complete(inst.instance_id, approval.revision)
        if inst.phase is InstancePhase.RELEASING and footprint.total_bytes == 0:
            self.finalize_instance(inst)
        self.apply_approvals(more)
        self.kick(node)

    def start_load(self, inst: SimInstance) -> None:
        inst.load_start_s = self.now
        load_s = self.cluster.load_s(inst.node.kind, self.spec.weights_bytes)
        if load_s == 0.0:
            self.load_done(inst)
        else:
            self.push(self.now + load_s, Phase.LOAD_DONE, inst)

    def load_done(self, inst: SimInstance) -> None:
        if inst.phase is InstancePhase.RELEASING:
            return
        inst.weights_resident = True
        inst.phase = InstancePhase.READY
        for req in inst.requests:
            # The cold-start wait is excused, as the paper counts TTFT (artifact tolerate_time).
            req.excused_s += self.now - req.attach_s
        inst.touch()
        if not inst.requests:
            self.became_idle(inst)
        self.kick(inst.node)

    # -- releases ----------------------------------------------------------------------------
    def release(self, inst: SimInstance, preempted: bool) -> None:
        """Preemption victim or keep-alive reclaim: requests out (recompute), memory back."""
        inst.phase = InstancePhase.RELEASING
        self.by_model[inst.model_id].remove(inst)
        evicted = list(inst.requests)
        inst.requests.clear()
        inst.prefill.clear()
        inst.context = 0
        inst.touch()
        for req in evicted:
            req.instance = None
            req.state = RequestState.WAITING
            if preempted:
                req.preemptions += 1
            self.requeue(req)
        self.submit(inst, LedgerOp.EVICT)

    def finalize_instance(self, inst: SimInstance) -> None:
        node = inst.node
        if inst not in node.instances:
            return
        node.instances.remove(inst)
        node.ledger.forget(inst.instance_id)
        del self.instances[inst.instance_id]
        if not node.instances:
            self.usage.change(node.kind, -1, self.now)

    def evict_youngest(self, inst: SimInstance) -> None:
        """Engine-level preemption when KV cannot grow: recompute the youngest request."""
        req = max(inst.requests, key=lambda r: (r.attach_s, r.index))
        self.detach(inst, req)
        req.state = RequestState.WAITING
        req.preemptions += 1
        self.counters.kv_evictions += 1
        self.requeue(req, self.policy.retry_interval_s)

    def detach(self, inst: SimInstance, req: SimRequest) -> None:
        inst.requests.remove(req)
        if req in inst.prefill:
            inst.prefill.remove(req)
        inst.context -= req.input_tokens + req.output_tokens
        inst.touch()
        req.instance = None

    # -- the watermark rule ------------------------------------------------------------------
    def memory_tick(self, inst: SimInstance) -> None:
        """Ask the memory policy for this instance's KV target; resolve a shortfall."""
        if inst.phase is InstancePhase.RELEASING:
            return
        node = inst.node
        spec = self.spec
        elastic = inst.kv_pool_bytes is None and self.system.sharing is Sharing.TOKEN
        if elastic and watermark_may_move(
            inst.context,
            inst.batch,
            inst.mean_output_tokens,
            inst.planned_kv_bytes,
            spec.kv_bytes_per_token,
            self.policy.l_min_tokens,
            self.policy.watermark,
            spec.block_tokens(node.kind),
        ):
            block = spec.block_tokens(node.kind)
            demand = kv_demand(
                inst.requests,
                inst.mean_output_tokens,
                spec.kv_bytes_per_token,
                self.policy.l_min_tokens,
                block,
            )
            need = engine_need_bytes(inst.context, inst.batch, spec.kv_bytes_per_token, block)
            demand = max(demand, need)
            planned = inst.planned_kv_bytes
            free = node.memory_bytes - node.planned_bytes
            target = watermark_target(
                demand, planned, free, self.policy.watermark, spec.block_bytes(node.kind)
            )
            if target is not None and target != planned:
                self.submit(inst, LedgerOp.KV_RESIZE, kv_bytes=target)
        while (
            inst.requests
            and inst.weights_resident
            and inst.kv_shortfall_tokens() > 0
            and inst.instance_id not in node.ledger.deferred()
            and inst.instance_id not in self.plans_pending
        ):
            self.evict_youngest(inst)
