"""Discrete-event simulator driving the platform's policies (DESIGN.md §6).

Virtual clock, one event queue ordered by `(time, phase, seq)`, a seeded RNG for the engine
model's optional noise: the same inputs and seed give identical results. A request arrives at
the gateway, which asks `slinfer.policy.dispatch.decide` where it goes; if nowhere,
it retries every `retry_interval_s` until its deadline passes, then is dropped (artifact
gateway). Instances, memory and devices are handled by the mixins in memory_ops.py and
execution.py, which call the memory service's and the workers' policies.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from slinfer.policy.dispatch import DispatchKind, decide
from slinfer.policy.headroom import deadline_s
from slinfer.policy.kv_scaling import LedgerOp
from slinfer.policy.types import DeviceKind
from slinfer.policy.view import DispatchView
from slinfer.sim.cluster import ClusterSpec
from slinfer.sim.events import Phase
from slinfer.sim.execution import ExecutionOps
from slinfer.sim.metrics import RunResult, mean_or_none, percentile
from slinfer.sim.state import RequestState, SimRequest
from slinfer.sim.trace import Trace
from slinfer.sim.world import SimConfig


class Simulator(ExecutionOps):
    def __init__(
        self, config: SimConfig, trace: Trace, cluster: ClusterSpec, profile: Mapping[str, Any]
    ) -> None:
        super().__init__(config, trace, cluster, profile)
        self._sample_sums: dict[str, float] = {}
        self._sample_counts: dict[str, float] = {}

    # -- gateway -----------------------------------------------------------------------------
    def dispatch(self, req: SimRequest) -> None:
        model_id = req.model_id
        view = DispatchView(
            devices=self.devices,
            candidates=self.by_model[model_id],
            model=self.spec,
            perf_by_label=self.perf_by_label,
            tpot_slo_s=self.config.slo.tpot_s,
            mean_output_tokens=self.histories[model_id].mean_tokens,
            rr_cursor=self.rr_cursor[model_id],
            load_free_kinds=self.load_free_kinds,
            model_id=model_id,
        )
        started = time.perf_counter()
        # A request already preempted is re-placed without preempting others: no cascades
        # (the live scheduler does the same, services/scheduler/dispatch.py).
        system = self.system if req.preemptions == 0 else replace(self.system, preempt=False)
        decision = decide(view, req, self.now, system, self.policy)
        self.decision_s.append(time.perf_counter() - started)
        self.counters.dispatch_calls += 1
        if decision.kind is DispatchKind.NONE:
            req.wait_version += 1
            retry_at = self.now + self.policy.retry_interval_s
            self.push(retry_at, Phase.RETRY, (req, req.wait_version, True))
            return
        if decision.rr_cursor is not None:
            self.rr_cursor[model_id] = decision.rr_cursor
        if decision.kind is DispatchKind.PREEMPT:
            assert decision.victim_id is not None
            self.counters.preemptions += 1
            self.release(self.instances[decision.victim_id], preempted=True)
        if decision.kind is DispatchKind.NEW_INSTANCE:
            assert decision.node_id is not None
            inst = self.create_instance(self.devices[decision.node_id], model_id, decision.kv_bytes)
        else:
            assert decision.instance_id is not None
            inst = self.instances[decision.instance_id]
        self.attach(inst, req)
        if decision.kind is not DispatchKind.NEW_INSTANCE and decision.kv_bytes is not None:
            self.submit(inst, LedgerOp.KV_RESIZE, kv_bytes=decision.kv_bytes)
        self.memory_tick(inst)
        self.kick(inst.node)

    def requeue(self, req: SimRequest, delay_s: float = 0.0) -> None:
        """A preempted request goes back to the gateway, keeping its tokens; like a new
        arrival it is tried once before its deadline is looked at (artifact gateway loop).
        `delay_s`: after an engine-level KV eviction it waits a retry interval, as the live
        scheduler does after a worker's refusal (an immediate retry could be admitted and
        evicted again at the same instant, for ever)."""
        req.wait_version += 1
        self.push(self.now + delay_s, Phase.RETRY, (req, req.wait_version, False))

    def retry(self, req: SimRequest, version: int, check_deadline: bool = True) -> None:
        if req.state is not RequestState.WAITING or version != req.wait_version:
            return
        if check_deadline and deadline_s(req, self.policy.slo_margin) < self.now:
            self.finalize_request(req, RequestState.DROPPED)
            return
        self.dispatch(req)

    # -- sampling ----------------------------------------------------------------------------
    def sample(self) -> None:
        for kind in (DeviceKind.CPU, DeviceKind.GPU):
            used = [n for n in self.nodes if n.kind is kind and n.instances]
            if used:
                per_node = sum(len(n.instances) for n in used) / len(used)
                self._accumulate(f"instances_{kind.value}", per_node)
        granted = used_bytes = 0
        for inst in self.instances.values():
            if inst.node.kind is DeviceKind.GPU and inst.kv_granted_bytes > 0:
                granted += inst.kv_granted_bytes
                used_bytes += inst.context * self.spec.kv_bytes_per_token
        if granted:
            self._accumulate("kv_gpu", used_bytes / granted)
        nxt = self.now + self.config.sample_interval_s
        if nxt <= self.trace.duration_s:
            self.push(nxt, Phase.SAMPLE, None)

    def _accumulate(self, key: str, value: float) -> None:
        self._sample_sums[key] = self._sample_sums.get(key, 0.0) + value
        self._sample_counts[key] = self._sample_counts.get(key, 0.0) + 1

    def _sampled(self, key: str) -> float | None:
        return mean_or_none(self._sample_sums.get(key, 0.0), self._sample_counts.get(key, 0.0))

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> RunResult:
        started = time.perf_counter()
        for req in self.requests:
            self.push(req.arrival_s, Phase.ARRIVAL, req)
        self.push(0.0, Phase.SAMPLE, None)
        queue = self.queue
        while len(queue):
            t, phase, _, payload = queue.pop()
            self.now = t
            if phase == Phase.GRANT_DONE:
                self.grant_done(payload)
            elif phase == Phase.ARRIVAL:
                self.dispatch(payload)
            elif phase == Phase.RETRY:
                self.retry(*payload)
            elif phase == Phase.WAKE:
                self.kick(payload)
            elif phase == Phase.LOAD_DONE:
                self.load_done(payload)
            elif phase == Phase.KEEP_ALIVE:
                self.keep_alive(*payload)
            elif phase == Phase.SAMPLE:
                self.sample()
        self.usage.advance(self.now)
        self._check_drained()
        return self._result(time.perf_counter() - started)

    def _check_drained(self) -> None:
        missing = [r.request_id for r in self.requests if r.index not in self.outcomes]
        if missing:
            raise AssertionError(f"{len(missing)} requests never left, e.g. {missing[:5]}")

    def _result(self, wall_s: float) -> RunResult:
        recs = self.records
        done = [r for r in recs if r.outcome is RequestState.DONE]
        window = max(self.trace.duration_s, 1e-9)
        counters = self.counters
        area = self.usage.area
        micro = [d * 1e6 for d in self.decision_s]
        return RunResult(
            system=self.system.name.value,
            model=self.spec.name,
            models=self.trace.models,
            trace=self.trace.name,
            requests=len(self.requests),
            completed=len(done),
            dropped=len(recs) - len(done),
            slo_met=sum(r.slo_met for r in recs),
            slo_met_strict=sum(r.slo_met_strict for r in recs),
            slo_met_token_deadlines=sum(r.slo_met_token_deadlines for r in recs),
            avg_nodes_cpu=self.usage.area_window[DeviceKind.CPU] / window,
            avg_nodes_gpu=self.usage.area_window[DeviceKind.GPU] / window,
            decode_tokens_per_node_s_cpu=mean_or_none(
                counters.decode_tokens_cpu, area[DeviceKind.CPU]
            ),
            decode_tokens_per_node_s_gpu=mean_or_none(
                counters.decode_tokens_gpu, area[DeviceKind.GPU]
            ),
            instances_per_node_cpu=self._sampled("instances_cpu"),
            instances_per_node_gpu=self._sampled("instances_gpu"),
            kv_utilisation_gpu=self._sampled("kv_gpu"),
            resize_events=counters.resize_events,
            deferred_resizes=counters.deferred_resizes,
            preemptions=counters.preemptions,
            kv_evictions=counters.kv_evictions,
            loads=counters.loads,
            dispatch_calls=counters.dispatch_calls,
            decision_us_mean=sum(micro) / len(micro) if micro else 0.0,
            decision_us_p99=percentile(micro, 0.99) or 0.0,
            ttft_p50_s=percentile([r.ttft_s for r in done if r.ttft_s is not None], 0.5),
            ttft_p99_s=percentile([r.ttft_s for r in done if r.ttft_s is not None], 0.99),
            tpot_p50_s=percentile([r.tpot_s for r in done if r.tpot_s is not None], 0.5),
            tpot_p99_s=percentile([r.tpot_s for r in done if r.tpot_s is not None], 0.99),
            sim_time_s=self.now,
            sim_wall_s=wall_s,
            events=self.queue.pushed,
        )
