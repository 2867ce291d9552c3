"""One policy, two drivers (STYLE.md): the simulator and the live scheduler decide alike.

The same cluster snapshot — nodes with their measured prefill share and iteration ratio,
instances with their requests, the model's tables, the shared Ō — is built twice: as the
simulator's entities (sim/state.py) and as the etcd records the live scheduler's view
builder reads (services/cluster/live_view.py, fed a ClusterView and a Tracker). Both are
handed to `policy.decide` for the same requests; every decision must be the same.
"""

from __future__ import annotations

from types import MappingProxyType

import pytest

from slinfer.policy import DEFAULT_CONFIG, DispatchView, decide, system_spec
from slinfer.policy.kv_scaling import OutputHistory
from slinfer.policy.ledger import LedgerOp, LedgerRequest
from slinfer.policy.model_spec import ModelSpec
from slinfer.policy.perf_model import DEFAULT_SAFETY, PerfModel
from slinfer.policy.systems import SystemName
from slinfer.policy.types import DeviceKind
from slinfer.services.cluster.live_view import ViewBuilder
from slinfer.services.cluster.state import ClusterView
from slinfer.services.cluster.tracker import LiveRequest, Tracker
from slinfer.services.common.records import InstanceRecord, InstanceState, ModelRecord, NodeRecord
from slinfer.sim.state import Clock, SimInstance, SimNode, SimRequest

MODEL = "m"
BPT = 64 * 1024  # KV bytes per token
WEIGHTS = 300 << 20
KV_TOKENS = 4096
TABLES = {
    "prefill_ms": [[16, 8.0], [256, 60.0], [2048, 600.0]],
    "decode_ms": [[128, [[1, 20.0], [4, 26.0], [16, 60.0]]], [2048, [[1, 30.0], [4, 40.0], [16, 90.0]]]],  # noqa: E501
}  # fmt: skip
# node id -> (kind, label, memory, ρ, ratio)
NODES = {
    "cpu-a": (DeviceKind.CPU, "cpu-2t", 4 << 30, 0.10, 1.20),
    "cpu-b": (DeviceKind.CPU, "cpu-2t", 4 << 30, 0.00, 0.90),
}
TPOT, NOW = 1.0, 1000.0
# instance id -> (node, [(request id, arrival, input, output)])
INSTANCES = {
    "i1": ("cpu-a", [("r1", NOW - 3.0, 300, 12), ("r2", NOW - 0.2, 500, 0)]),
    "i2": ("cpu-a", [("r3", NOW - 9.0, 120, 40)]),
    "i3": ("cpu-b", []),
}
TALLY = {"total_tokens": 900.0, "count": 6}
PRIOR = 128.0


def _spec() -> ModelSpec:
    return ModelSpec(
        name=MODEL,
        weights_bytes=WEIGHTS,
        kv_bytes_per_token=BPT,
        gpu_block_tokens=16,
        cpu_block_tokens=16,
        cpu_kv_pool_bytes=KV_TOKENS * BPT,
    )


def _ttft(n: int) -> float:
    return max(2.0, n / 512)


def simulator_view() -> DispatchView:
    spec = _spec()
    clock = Clock()
    clock.now = NOW
    base = PerfModel.from_tables(
        TABLES["prefill_ms"], TABLES["decode_ms"], DEFAULT_SAFETY[DeviceKind.CPU]
    )  # noqa: E501
    history = OutputHistory(PRIOR, total_tokens=TALLY["total_tokens"], count=TALLY["count"])
    nodes: dict[str, SimNode] = {}
    for node_id, (kind, label, memory, rho, ratio) in NODES.items():
        node = SimNode(node_id, kind, label, memory, 16, clock)
        node.prefill.record(NOW - node.prefill.window_s * rho, NOW)  # ρ over the window
        node.ratio.observe(ratio, 1.0)  # the first sample sets the ratio
        nodes[node_id] = node
    candidates = []
    index = 0
    for iid, (node_id, reqs) in INSTANCES.items():
        node = nodes[node_id]
        inst = SimInstance(iid, MODEL, node, spec, base, base, history, TPOT, NOW)
        inst.phase = inst.phase.READY
        inst.weights_resident = True
        for op, kw in ((LedgerOp.LOAD, {"weights_bytes": WEIGHTS}),
                       (LedgerOp.KV_RESIZE, {"kv_bytes": KV_TOKENS * BPT})):  # fmt: skip
            rev = node.ledger.revision(iid)
            node.ledger.submit(LedgerRequest(f"{iid}#{rev + 1}", iid, op, rev, **kw))
            node.ledger.complete(iid, rev + 1)
        for rid, arrival, n_in, n_out in reqs:
            index += 1
            r = SimRequest(index, MODEL, arrival, n_in, 10_000, _ttft(n_in), TPOT)
            r.request_id, r.output_tokens = rid, n_out
            inst.requests.append(r)
            inst.context += n_in + n_out
            if n_out == 0:
                inst.prefill.append(r)
        node.instances.append(inst)
        candidates.append(inst)
    return DispatchView(
        devices=MappingProxyType(dict(nodes)),
        candidates=tuple(candidates),
        model=spec,
        perf_by_label=MappingProxyType({(DeviceKind.CPU, "cpu-2t"): base}),
        tpot_slo_s=TPOT,
        mean_output_tokens=history.mean_tokens,
        model_id=MODEL,
    )


def live_view() -> DispatchView:
    cluster = ClusterView()
    for node_id, (kind, label, memory, rho, ratio) in NODES.items():
        cluster.nodes[node_id] = NodeRecord(
            node_id=node_id, kind=kind, label=label, memory_bytes=memory,
            address=f"{node_id}:1", prefill_share=rho, perf_ratio=ratio,
        )  # fmt: skip
    cluster.models[MODEL] = ModelRecord(model_id=MODEL, path="/m", tpot_slo_s=TPOT)
    cluster.profiles[MODEL] = {"cpu-2t": TABLES}
    cluster.outputs[MODEL] = dict(TALLY)
    tracker = Tracker(prior_output_tokens=PRIOR)
    for iid, (node_id, reqs) in INSTANCES.items():
        cluster.instances[iid] = InstanceRecord(
            instance_id=iid, node_id=node_id, model_id=MODEL, state=InstanceState.READY,
            kv_capacity_tokens=KV_TOKENS, kv_bytes_per_token=BPT,
            kv_resizable=False, weights_bytes=WEIGHTS,
        )  # fmt: skip
        for rid, arrival, n_in, n_out in reqs:
            live = LiveRequest(rid, MODEL, arrival, n_in, _ttft(n_in), TPOT, output_tokens=n_out)
            tracker.attach(live, iid)
    return ViewBuilder().build(cluster, tracker, cluster.models[MODEL], [], KV_TOKENS)


@pytest.mark.parametrize("system", [SystemName.SLINFER, SystemName.SLINFER_NO_DEFRAG])
@pytest.mark.parametrize("n_in", [16, 200, 900, 1800])
@pytest.mark.parametrize("ttft", [0.05, 0.3, None])
def test_simulator_and_live_scheduler_decide_alike(
    system: SystemName, n_in: int, ttft: float | None
) -> None:
    # Requests of these sizes and SLOs land on each of i1, i2, i3 or nowhere (SHADOW_RUN).
    sim, live = simulator_view(), live_view()
    assert sim.mean_output_tokens == live.mean_output_tokens
    for node_id, device in sim.devices.items():
        other = live.devices[node_id]
        assert device.prefill_share == pytest.approx(other.prefill_share)
        assert device.perf_ratio == pytest.approx(other.perf_ratio)
        assert device.planned_bytes == other.planned_bytes
    spec = system_spec(system)
    slo = _ttft(n_in) if ttft is None else ttft
    new_sim = SimRequest(999, MODEL, NOW, n_in, 10_000, slo, TPOT)
    new_live = LiveRequest(new_sim.request_id, MODEL, NOW, n_in, slo, TPOT)
    a = decide(sim, new_sim, NOW, spec, DEFAULT_CONFIG)
    b = decide(live, new_live, NOW, spec, DEFAULT_CONFIG)
    assert a == b
