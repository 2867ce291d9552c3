"""Invariants of admission under any request sequence (hypothesis)."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from slinfer.policy.admission import shadow_validate
from slinfer.policy.config import PolicyConfig
from slinfer.policy.model_spec import ModelSpec
from slinfer.policy.perf_model import PerfModel
from slinfer.policy.time_slice import device_slices
from slinfer.policy.types import DeviceKind, InstanceView, RequestView
from slinfer.sim.paths import load_profiles
from tests.policy.factories import device, instance

PROFILE = load_profiles()
CPU_PERF = PerfModel.from_profile(PROFILE, "llama-2-7b", DeviceKind.CPU, "cpu")
GPU_PERF = PerfModel.from_profile(PROFILE, "llama-2-7b", DeviceKind.GPU, "gpu")
SPEC = ModelSpec.from_profile(PROFILE, "llama-2-7b")

ARRIVALS = st.lists(
    st.tuples(
        st.integers(0, 3),  # instance
        st.integers(1, 4000),  # input tokens
        st.integers(0, 300),  # tokens already produced (a re-dispatched request)
        st.floats(0.0, 5.0),  # arrival offset before now
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(
    arrivals=ARRIVALS, kind=st.sampled_from(list(DeviceKind)), margin=st.sampled_from([0.95, 1.0])
)
def test_slices_never_exceed_the_device(arrivals: list, kind: DeviceKind, margin: float) -> None:
    """Σ time slices on a device stays ≤ 1 after any sequence of admissions."""
    config = PolicyConfig(slo_margin=margin)
    perf = CPU_PERF if kind is DeviceKind.CPU else GPU_PERF
    pool = 32.0 if kind is DeviceKind.CPU else None
    insts = [
        instance(f"i{k}", (), perf=perf, model=SPEC, node_id="n", pool_gb=pool, kv_gb=0.0)
        for k in range(4)
    ]
    now = 100.0
    for n, (k, input_tokens, out, age) in enumerate(arrivals):
        dev = device(*insts, node_id="n", kind=kind, memory_gb=256.0)
        new = RequestView(f"r{n}", now - age, input_tokens, out, 8.0, 0.25)
        if shadow_validate(dev, insts[k], new, now, config).admitted:
            insts[k] = _with(insts[k], new)
        after = device(*insts, node_id="n", kind=kind, memory_gb=256.0)
        assert device_slices(after, margin) <= 1.0 + 1e-9
        now += 0.05


@settings(max_examples=100, deadline=None)
@given(arrivals=ARRIVALS)
def test_planned_memory_never_exceeds_the_gpu(arrivals: list) -> None:
    """Admitted KV demand plus weights stays within the GPU's memory."""
    from slinfer.policy.kv_scaling import kv_demand

    insts = [instance(f"i{k}", (), perf=GPU_PERF, model=SPEC, kv_gb=0.0) for k in range(4)]
    memory_gb = 60.0
    for n, (k, input_tokens, out, _) in enumerate(arrivals):
        dev = device(*insts, memory_gb=memory_gb)
        new = RequestView(f"r{n}", 0.0, input_tokens * 4, out, 60.0, 0.25)
        decision = shadow_validate(dev, insts[k], new, 0.0, PolicyConfig())
        if decision.admitted:
            assert decision.kv_demand_bytes is not None
            grown = _with(insts[k], new)
            insts[k] = dataclasses.replace(
                grown, planned_kv_bytes=max(grown.planned_kv_bytes, decision.kv_demand_bytes)
            )
        planned = sum(i.planned_weights_bytes + i.planned_kv_bytes for i in insts)
        assert planned <= int(memory_gb * 2**30)
        for inst in insts:
            if inst.requests:
                demand = kv_demand(inst.requests, 0.0, SPEC.kv_bytes_per_token, 4096, 16)
                assert demand <= inst.planned_kv_bytes


def _with(inst: InstanceView, r: RequestView) -> InstanceView:
    return dataclasses.replace(
        inst, requests=(*inst.requests, r), prefill_ids=inst.prefill_ids | {r.request_id}
    )
