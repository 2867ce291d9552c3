"""Small hand-made views for policy tests: flat, round-number latency tables."""

from __future__ import annotations

from slinfer.policy.model_spec import GIB, ModelSpec
from slinfer.policy.perf_model import PerfModel
from slinfer.policy.types import (
    DeviceKind,
    DeviceView,
    InstancePhase,
    InstanceView,
    RequestView,
)

KB = 1024


def flat_perf(decode_ms: float = 50.0, prefill_ms_per_token: float = 1.0) -> PerfModel:
    """Decode takes `decode_ms` at any batch/context; prefill is linear in the input."""
    prefill = [[1, prefill_ms_per_token], [10_000, prefill_ms_per_token * 10_000]]
    rows = [[1, decode_ms], [1024, decode_ms]]
    return PerfModel.from_tables(prefill, [(512, rows), (8192, rows)], safety=1.0)


def spec(
    name: str = "llama-2-7b",
    weights_gb: float = 10.0,
    kv_kb_per_token: int = 1024,
    grant: int = 2,
) -> ModelSpec:
    return ModelSpec(
        name=name,
        weights_bytes=int(weights_gb * GIB),
        kv_bytes_per_token=kv_kb_per_token * KB,
        gpu_block_tokens=16,
        cpu_block_tokens=32,
        cpu_kv_pool_bytes=8 * GIB,
        gpu_decode_grant=grant,
    )


def req(
    rid: str = "r",
    arrival_s: float = 0.0,
    input_tokens: int = 100,
    output_tokens: int = 0,
    ttft_slo_s: float = 1.0,
    tpot_slo_s: float = 0.25,
) -> RequestView:
    return RequestView(rid, arrival_s, input_tokens, output_tokens, ttft_slo_s, tpot_slo_s)


def instance(
    iid: str,
    requests: tuple[RequestView, ...] = (),
    *,
    node_id: str = "gpu0",
    prefill: tuple[str, ...] = (),
    perf: PerfModel | None = None,
    model: ModelSpec | None = None,
    phase: InstancePhase = InstancePhase.READY,
    weights: bool = True,
    kv_gb: float = 0.0,
    pool_gb: float | None = None,
    mean_output: float = 0.0,
    runnable: bool = True,
) -> InstanceView:
    m = model or spec()
    return InstanceView(
        instance_id=iid,
        model_name=m.name,
        node_id=node_id,
        phase=phase,
        perf=perf or flat_perf(),
        spec=m,
        requests=requests,
        prefill_ids=frozenset(prefill),
        planned_weights_bytes=m.weights_bytes if weights else 0,
        planned_kv_bytes=int(kv_gb * GIB),
        kv_pool_bytes=None if pool_gb is None else int(pool_gb * GIB),
        runnable=runnable,
        mean_output_tokens=mean_output,
    )


def device(
    *instances: InstanceView,
    node_id: str = "gpu0",
    kind: DeviceKind = DeviceKind.GPU,
    memory_gb: float = 80.0,
    busy_until_s: float | None = None,
    max_instances: int | None = None,
) -> DeviceView:
    return DeviceView(
        node_id=node_id,
        kind=kind,
        label=kind.value,
        memory_bytes=int(memory_gb * GIB),
        instances=tuple(instances),
        max_instances=max_instances,
        busy_until_s=busy_until_s,
    )
