"""Running the devices in the simulator: the worker's side (DESIGN.md §2, §4).

When a device is free, the same `Arbiter` the workers run picks the next grant (EDF on
headroom); the engine model computes its iterations; at its end the tokens, first-token and
finish times are applied, approved resizes are carried out (between iterations, never during
one), the memory policy re-evaluates the instance's KV, and an idle instance starts its
keep-alive. Static 2-way sharing (`sllm+c+s`) throttles a GPU instance after each grant.
"""

from __future__ import annotations

from slinfer.policy.baselines import throttle_wakeup_s, throttles
from slinfer.policy.keep_alive import reclaim_due
from slinfer.policy.types import DeviceKind, InstancePhase
from slinfer.sim.events import Phase
from slinfer.sim.memory_ops import MemoryOps
from slinfer.sim.state import RequestState, SimInstance, SimNode, SimRequest


class ExecutionOps(MemoryOps):
    def kick(self, node: SimNode) -> None:
        """Start the next grant on `node` if it is free and some instance can run."""
        if node.running is not None:
            return
        node.now = self.now
        grant = self.arbiter.decide(node, self.now)
        if grant is None:
            return
        inst = self.instances[grant.instance_id]
        plan = self.engine_model.plan(inst, grant.iterations, self.now)
        node.running = inst
        node.busy_until_s = plan.end_s
        self.grants[node.node_id] = plan
        self.push(plan.end_s, Phase.GRANT_DONE, node)

    def grant_done(self, node: SimNode) -> None:
        plan = self.grants.pop(node.node_id)
        inst = plan.instance
        node.running = None
        node.busy_until_s = None
        if node.kind is DeviceKind.CPU:
            self.counters.decode_tokens_cpu += plan.decode_tokens
        else:
            self.counters.decode_tokens_gpu += plan.decode_tokens
        finished: list[SimRequest] = []
        for effect in plan.effects:
            req = effect.request
            if req.instance is not inst:
                continue  # evicted during the grant: its tokens are recomputed elsewhere
            req.output_tokens += effect.tokens
            if effect.lateness_s > req.lateness_s:
                req.lateness_s = effect.lateness_s
            req.served_on = node.kind
            inst.context += effect.tokens
            if effect.first_token_s is not None and req.first_token_s is None:
                req.first_token_s = effect.first_token_s
            if effect.prefilled:
                inst.prefill.remove(req)
            if effect.finish_s is not None:
                req.finish_s = effect.finish_s
                finished.append(req)
        inst.touch()
        for req in finished:
            self.detach(inst, req)
            inst.history.observe(req.output_tokens)
            self.finalize_request(req, RequestState.DONE)
        if throttles(self.system, node.kind):
            self._throttle(inst, plan.end_s - plan.start_s)
        pending = self.plans_pending.pop(inst.instance_id, None)
        if pending is not None:
            self.perform(inst, pending)
        if inst.phase is not InstancePhase.RELEASING:
            self.memory_tick(inst)
            if not inst.requests and inst.phase is InstancePhase.READY:
                self.became_idle(inst)
        self.kick(node)

    def _throttle(self, inst: SimInstance, busy_s: float) -> None:
        throttle = inst.throttle
        throttle.busy_time_s += busy_s
        wake = throttle_wakeup_s(throttle.busy_start_s, throttle.busy_time_s, 2)
        if wake > self.now:
            throttle.until_s = wake
            self.push(wake, Phase.WAKE, inst.node)

    def attach(self, inst: SimInstance, req: SimRequest) -> None:
        if not inst.requests:
            inst.throttle.busy_start_s = self.now
            inst.throttle.busy_time_s = 0.0
        req.state = RequestState.ATTACHED
        req.instance = inst
        req.attach_s = self.now
        inst.requests.append(req)
        inst.prefill.append(req)
        inst.context += req.input_tokens + req.output_tokens
        inst.touch()
        inst.version += 1
        inst.idle_since_s = None

    def became_idle(self, inst: SimInstance) -> None:
        inst.idle_since_s = self.now
        keep = self.cluster.keep_alive.seconds(inst.node.kind)
        self.push(self.now + keep, Phase.KEEP_ALIVE, (inst, inst.version))

    def keep_alive(self, inst: SimInstance, version: int) -> None:
        if inst.version != version or inst.phase is not InstancePhase.READY:
            return
        keep = self.cluster.keep_alive
        if reclaim_due(inst, inst.idle_since_s, inst.node.kind, self.now, keep):
            self.release(inst, preempted=False)
