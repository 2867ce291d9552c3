"""Build the policy core's `DispatchView` from the scheduler's etcd view and its requests.

This is the live driver's edge (STYLE.md "one policy, two drivers"): plain frozen views go
in, `policy.decide` decides, the dispatcher carries the decision out. A device is described
as its worker measures it (DESIGN.md §2): its prefill share ρ, its observed/predicted
iteration ratio — every instance's predictions on it are multiplied by that ratio — and its
load throughput, from which a loading instance's ready time is predicted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from slinfer.policy import (
    DeviceKind,
    DeviceView,
    DispatchView,
    InstancePhase,
    InstanceView,
    ModelSpec,
    PerfModel,
    RequestView,
)
from slinfer.policy.baselines import derived_caps
from slinfer.policy.model_spec import ConcurrencyCaps
from slinfer.policy.perf_model import DEFAULT_SAFETY
from slinfer.policy.slo import SloPolicy
from slinfer.services.cluster.state import ClusterView
from slinfer.services.cluster.tracker import LiveRequest, Tracker
from slinfer.services.common.engine_types import EngineKind
from slinfer.services.common.model_dir import FP32_BYTES, ModelDir, inspect_model_dir
from slinfer.services.common.records import InstanceRecord, InstanceState, ModelRecord, NodeRecord

_PHASES = {
    InstanceState.LOADING: InstancePhase.LOADING,
    InstanceState.READY: InstancePhase.READY,
    InstanceState.DRAINING: InstancePhase.RELEASING,
    InstanceState.UNLOADING: InstancePhase.RELEASING,
    InstanceState.FAILED: InstancePhase.RELEASING,
}


@dataclass(frozen=True, slots=True)
class PendingLoad:
    """A cold start this scheduler has asked for and etcd does not show yet."""

    instance_id: str
    model_id: str
    node_id: str
    kv_capacity_tokens: int
    started_s: float  # wall clock of the LoadInstance call

    def record(self) -> InstanceRecord:
        """The instance as it will count until its worker's record shows up: loading."""
        return InstanceRecord(
            instance_id=self.instance_id,
            model_id=self.model_id,
            node_id=self.node_id,
            state=InstanceState.LOADING,
            kv_capacity_tokens=self.kv_capacity_tokens,
            loading_since=self.started_s,
        )


def _kind(label: str) -> DeviceKind:
    """The device kind a hardware label names (`cpu-8t`, `gpu-...`)."""
    return DeviceKind.GPU if label.startswith("gpu") else DeviceKind.CPU


def label_of(cluster: ClusterView, node_id: str) -> str:
    """The hardware label of a node's perf tables (a CPU's when the node is gone)."""
    node = cluster.nodes.get(node_id)
    return node.label if node is not None else DeviceKind.CPU.value


def request_view(r: LiveRequest) -> RequestView:
    return RequestView(
        r.request_id,
        r.arrival_s,
        r.input_tokens,
        r.output_tokens,
        r.ttft_slo_s,
        r.tpot_slo_s,
        r.excused_s,
    )


class ViewBuilder:
    """Caches what does not change per request (model specs, perf models)."""

    def __init__(self) -> None:
        self._perf: dict[tuple[str, str, int], PerfModel] = {}
        self._caps: dict[tuple[str, str, int, float], ConcurrencyCaps] = {}
        self._dirs: dict[str, Any] = {}

    def perf(self, cluster: ClusterView, model_id: str, label: str) -> PerfModel | None:
        tables = cluster.profiles_of(model_id).get(label)
        if tables is None:
            return None
        key = (model_id, label, id(tables))
        perf = self._perf.get(key)
        if perf is None:
            perf = PerfModel.from_tables(
                tables["prefill_ms"], tables["decode_ms"], DEFAULT_SAFETY[_kind(label)]
            )
            self._perf[key] = perf
        return perf

    def caps(
        self, cluster: ClusterView, model: ModelRecord
    ) -> dict[tuple[DeviceKind, str], ConcurrencyCaps]:
        """The baselines' concurrency caps per measured device label (`derived_caps`)."""
        model_id = model.model_id
        tpot = model.tpot_slo_s or SloPolicy().tpot_s
        out: dict[tuple[DeviceKind, str], ConcurrencyCaps] = {}
        for label, tables in cluster.profiles_of(model_id).items():
            key = (model_id, label, id(tables), tpot)
            caps = self._caps.get(key)
            if caps is None:
                perf = self.perf(cluster, model_id, label)
                if perf is None:
                    continue
                caps = self._caps[key] = derived_caps(perf, tpot)
            out[(_kind(label), label)] = caps
        return out

    def has_profile(self, cluster: ClusterView, model_id: str) -> bool:
        return bool(cluster.profiles_of(model_id))

    def measured(self, cluster: ClusterView, model: ModelRecord) -> tuple[int, int] | None:
        """(weights bytes, KV bytes per token) a loaded instance of the model reported."""
        rec = next((i for i in cluster.instances_of(model.model_id) if i.weights_bytes), None)
        if rec is None:
            return None
        return rec.weights_bytes, rec.kv_bytes_per_token

    def model_dir(self, model: ModelRecord) -> ModelDir:
        info = self._dirs.get(model.path) or inspect_model_dir(model.path)
        self._dirs[model.path] = info
        return info

    def spec(self, cluster: ClusterView, model: ModelRecord, kv_tokens: int) -> ModelSpec:
        """Real figures from a loaded instance when there is one, fp32 estimates otherwise."""
        model_id = model.model_id
        measured = self.measured(cluster, model)
        loaded = next((i for i in cluster.instances_of(model_id) if i.weights_bytes), None)
        block = loaded.kv_block_tokens if loaded is not None else 16
        if measured is not None:
            weights, bpt = measured
        else:
            info = self.model_dir(model)
            weights = info.weights_bytes(FP32_BYTES)
            bpt = info.kv_bytes_per_token(FP32_BYTES)
        return ModelSpec(
            name=model_id,
            weights_bytes=max(weights, 1),
            kv_bytes_per_token=max(bpt, 1),
            gpu_block_tokens=16,
            cpu_block_tokens=block,  # the engine's own blocks (OpenVINO 32, PyTorch 16)
            cpu_kv_pool_bytes=kv_tokens * max(bpt, 1),
            caps=MappingProxyType(self.caps(cluster, model)),
        )

    def instance_view(
        self,
        cluster: ClusterView,
        tracker: Tracker,
        rec: InstanceRecord,
        label: str,
        specs: dict[str, ModelSpec],
        kv_tokens_default: int,
    ) -> InstanceView | None:
        model_id = rec.model_id
        model = cluster.models.get(model_id)
        perf = self.perf(cluster, model_id, label)
        if model is None or perf is None:
            return None
        node = cluster.nodes.get(rec.node_id)
        ratio = node.perf_ratio if node is not None else 1.0
        if ratio != 1.0:  # the device runs its iterations this much slower (faster) than tabled
            perf = perf.with_safety(perf.safety * ratio)
        spec = specs.get(model_id)
        if spec is None:
            kv = model.kv_capacity_tokens or kv_tokens_default
            spec = specs[model_id] = self.spec(cluster, model, kv)
        requests = tuple(request_view(r) for r in tracker.load_on(rec.instance_id))
        bpt = rec.kv_bytes_per_token or spec.kv_bytes_per_token
        kv_bytes = rec.kv_capacity_tokens * bpt
        weights_bytes = rec.weights_bytes or spec.weights_bytes
        # The memory ledger's plan, where there is one (DESIGN.md §3: admission counts
        # planned footprints); the instance's measured allocation otherwise.
        book = cluster.ledgers.get(rec.node_id, {}).get("instances", {})
        plan = book.get(rec.instance_id)
        planned_kv = int(plan["planned_kv_bytes"]) if plan else kv_bytes
        if plan:
            weights_bytes = int(plan["planned_weights_bytes"])
        phase = _PHASES[rec.state]
        ready_at = None
        if phase is InstancePhase.LOADING:
            rate = node.load_bytes_per_s if node is not None else 0.0
            started = rec.loading_since or time.time()
            ready_at = started + (spec.weights_bytes / rate if rate > 0 else 0.0)
        return InstanceView(
            instance_id=rec.instance_id,
            model_name=model_id,
            node_id=rec.node_id,
            phase=phase,
            perf=perf,
            spec=spec,
            requests=requests,
            prefill_ids=frozenset(r.request_id for r in requests if r.output_tokens == 0),
            planned_weights_bytes=weights_bytes,
            planned_kv_bytes=planned_kv,
            kv_pool_bytes=None if rec.kv_resizable else kv_bytes,
            tpot_slo_s=model.tpot_slo_s or 0.25,
            mean_output_tokens=tracker.mean_output(model_id, cluster.outputs),
            ready_at_s=ready_at,
            moved_at_s=tracker.moved_at(rec.instance_id),
        )

    def build(
        self,
        cluster: ClusterView,
        tracker: Tracker,
        model: ModelRecord,
        pending: list[PendingLoad],
        kv_tokens_default: int,
    ) -> DispatchView:
        model_id = model.model_id
        specs: dict[str, ModelSpec] = {}
        kv_tokens = model.kv_capacity_tokens or kv_tokens_default
        spec = specs[model_id] = self.spec(cluster, model, kv_tokens)
        records = list(cluster.instances.values())
        seen = {r.instance_id for r in records}
        records += [p.record() for p in pending if p.instance_id not in seen]
        devices: list[DeviceView] = []
        candidates: list[InstanceView] = []
        for node_id, node in sorted(cluster.nodes.items()):
            if (model.device is not None and node.kind is not model.device) or (
                model.engine is EngineKind.TORCH and node.kind is not DeviceKind.CPU
            ):
                continue
            if cluster.unavailable(node_id):  # draining, or suspected dead: nothing new there
                continue
            views, other = [], 0
            for rec in records:
                if rec.node_id != node_id:
                    continue
                iv = self.instance_view(cluster, tracker, rec, node.label, specs, kv_tokens_default)
                if iv is None:  # no perf model yet: its memory still counts
                    other += rec.footprint_bytes
                    continue
                views.append(iv)
                if iv.model_name == model_id:
                    candidates.append(iv)
            devices.append(device_view(node_id, node, tuple(views), other))
        perf_by_label = {}
        for label in cluster.profiles_of(model_id):
            perf = self.perf(cluster, model_id, label)
            if perf is not None:  # a new instance's device scales it (placement.new_instance)
                perf_by_label[(_kind(label), label)] = perf
        return DispatchView(
            devices=DispatchView.freeze_devices(devices),
            candidates=tuple(sorted(candidates, key=lambda c: c.instance_id)),
            model=spec,
            perf_by_label=perf_by_label,
            tpot_slo_s=model.tpot_slo_s or 0.25,
            mean_output_tokens=tracker.mean_output(model_id, cluster.outputs),
            model_id=model_id,
        )


def device_view(
    node_id: str,
    node: NodeRecord,
    instances: tuple[InstanceView, ...],
    other_planned_bytes: int = 0,
) -> DeviceView:
    """A node as its worker measured it (worker/node.py's record)."""
    return DeviceView(
        node_id,
        node.kind,
        node.label,
        node.memory_bytes,
        instances,
        other_planned_bytes=other_planned_bytes,
        prefill_share=node.prefill_share,
        perf_ratio=node.perf_ratio,
        load_bytes_per_s=node.load_bytes_per_s,
    )
