"""Deployed models: validated specs stored at /slinfer/models/{id} (`ModelRecord`)."""

from __future__ import annotations

import math
import time

from slinfer.policy import DeviceKind
from slinfer.services.cluster.state import ClusterView
from slinfer.services.common import keys
from slinfer.services.common.auth import Principal
from slinfer.services.common.convert import (
    DEVICE_FROM_PB,
    DEVICE_TO_PB,
    ENGINE_FROM_PB,
    ENGINE_TO_PB,
    WEIGHTS_FROM_PB,
    WEIGHTS_TO_PB,
)
from slinfer.services.common.engine_types import EngineKind, WeightFormat
from slinfer.services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    ModelNotFound,
)
from slinfer.services.common.model_dir import ModelDir, inspect_model_dir, node_dtype_bytes
from slinfer.services.common.records import ModelRecord, NodeRecord, read_record
from slinfer.services.common.store import Entry, Store
from slinfer.v1 import common_pb2, gateway_pb2

# Bounds of deploy settings: beyond them a value is a mistake (docs/API.md).
MAX_SLO_S = 3600.0
MAX_KEEP_ALIVE_S = 30 * 86400.0
MAX_KV_TOKENS = 1 << 30


def _positive(
    name: str, value: float | None, *, zero_ok: bool = False, at_most: float = MAX_SLO_S
) -> float | None:
    if value is None:
        return None
    low = "0 <=" if zero_ok else "0 <"
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok) or value > at_most:
        raise InvalidArgument(
            f"{name} must be a finite number with {low} {name} <= {at_most:g}, got {value}"
        )
    return float(value)


def spec_from_request(req: gateway_pb2.DeployModelRequest) -> ModelRecord:
    if not keys.valid_name(req.model_id):
        shown = req.model_id[:40] + ("..." if len(req.model_id) > 40 else "")
        raise InvalidArgument(
            f"model_id {shown!r} is invalid: use 1-64 of [A-Za-z0-9._-], "
            "starting with a letter or digit"
        )
    info = inspect_model_dir(req.path)
    if req.engine not in ENGINE_FROM_PB:
        raise InvalidArgument(f"unknown engine {req.engine}: use auto (0), torch (1) or vllm (2)")
    if req.device not in DEVICE_FROM_PB:
        raise InvalidArgument(f"unknown device {req.device}: use auto (0), cpu (1) or gpu (2)")
    engine = ENGINE_FROM_PB[req.engine]
    device = DEVICE_FROM_PB[req.device]
    if engine is EngineKind.OPENVINO and device is DeviceKind.GPU:
        raise InvalidArgument("engine openvino runs on CPU nodes; use engine vllm for device gpu")
    if req.weights not in WEIGHTS_FROM_PB:
        raise InvalidArgument(f"unknown weight format {req.weights}")
    weights = WEIGHTS_FROM_PB[req.weights]
    if engine is EngineKind.VLLM and weights is not WeightFormat.AUTO:
        raise InvalidArgument(
            "engine vllm runs the checkpoint's own weights; deploy it with weights auto"
        )
    kv = req.kv_capacity_tokens if req.HasField("kv_capacity_tokens") else None
    if kv is not None and not 0 < kv <= MAX_KV_TOKENS:
        raise InvalidArgument(f"kv_capacity_tokens must be in (0, {MAX_KV_TOKENS}], got {kv}")
    return ModelRecord(
        model_id=req.model_id,
        path=str(info.path),
        engine=engine,
        device=device,
        ttft_slo_s=_positive("ttft_slo_s", req.ttft_slo_s if req.HasField("ttft_slo_s") else None),
        tpot_slo_s=_positive("tpot_slo_s", req.tpot_slo_s if req.HasField("tpot_slo_s") else None),
        keep_alive_s=_positive(
            "keep_alive_s",
            req.keep_alive_s if req.HasField("keep_alive_s") else None,
            zero_ok=True,
            at_most=MAX_KEEP_ALIVE_S,
        ),
        kv_capacity_tokens=kv,
        weights=weights,
        max_model_len=info.max_model_len,
        vocab_size=info.vocab_size,
        architecture=info.architecture,
        has_chat_template=info.has_chat_template,
        created_at=time.time(),
    )


def model_info(
    spec: ModelRecord, instances: int, defaults: dict[str, float]
) -> gateway_pb2.ModelInfo:
    return gateway_pb2.ModelInfo(
        model_id=spec.model_id,
        path=spec.path,
        engine=ENGINE_TO_PB[spec.engine] if spec.engine else common_pb2.ENGINE_KIND_AUTO,
        device=DEVICE_TO_PB[spec.device] if spec.device else common_pb2.DEVICE_KIND_AUTO,
        ttft_slo_s=spec.ttft_slo_s or 0.0,
        tpot_slo_s=spec.tpot_slo_s or defaults["tpot_slo_s"],
        keep_alive_s=spec.keep_alive_s
        if spec.keep_alive_s is not None
        else defaults["keep_alive_s"],
        kv_capacity_tokens=spec.kv_capacity_tokens or int(defaults["kv_capacity_tokens"]),
        max_model_len=spec.max_model_len,
        architecture=spec.architecture,
        instances=instances,
        created_at=spec.created_at,
        vocab_size=spec.vocab_size,
        weights=WEIGHTS_TO_PB[spec.weights],
    )


async def deploy(store: Store, spec: ModelRecord) -> None:
    if not await store.create(keys.model(spec.model_id), spec.to_etcd()):
        raise AlreadyExists(
            f"model {spec.model_id} is already deployed; delete it first or pick another id"
        )


def check_can_run(
    view: ClusterView, spec: ModelRecord, default_kv_tokens: int, info: ModelDir | None = None
) -> None:
    """FAILED_PRECONDITION for a model that can never run on this cluster: no node of the
    device it asks for, or no node with room for its weights and initial KV pool. A cluster
    with no worker registered yet is not judged (workers may still be starting)."""
    if not view.nodes:
        return
    nodes = eligible_nodes(view, spec)
    want = spec.device.value if spec.device else ("cpu" if spec.engine is EngineKind.TORCH else "")
    if not nodes:
        kinds = sorted({n.kind.value for n in view.nodes.values()})
        raise FailedPrecondition(
            f"model {spec.model_id} can never run here: it needs a {want or 'cpu'} node "
            f"and the cluster has only {', '.join(kinds)} nodes; deploy it for another device "
            f"or add a {want or 'cpu'} worker"
        )
    info = info or inspect_model_dir(spec.path)
    kv = spec.kv_capacity_tokens or default_kv_tokens
    need = min(info.estimate_bytes(kv, node_dtype_bytes(n)) for n in nodes)
    largest = max(n.memory_bytes for n in nodes)
    if need > largest:
        raise FailedPrecondition(
            f"model {spec.model_id} can never run here: its weights and initial KV pool "
            f"({kv} tokens) need {need >> 20} MiB and the largest {want or 'eligible'} node "
            f"offers {largest >> 20} MiB; lower kv_capacity_tokens or add a node with more "
            "memory"
        )


def eligible_nodes(view: ClusterView, spec: ModelRecord) -> list[NodeRecord]:
    """The nodes an instance of the model may go to (its device and engine)."""
    return [
        n
        for n in view.nodes.values()
        if (spec.device is None or n.kind is spec.device)
        and not (spec.engine is EngineKind.TORCH and n.kind is not DeviceKind.CPU)
    ]


async def delete(store: Store, model_id: str, principal: Principal) -> ModelRecord | None:
    """Delete the model's record; returns what it said (None if it could not be read)."""
    entry = await store.get(keys.model(model_id))
    if entry is None or not principal.owns(read_model(entry)):
        raise ModelNotFound(f"model {model_id} is not deployed (see ListModels)")
    if not await store.delete(keys.model(model_id), entry.mod_revision):
        raise FailedPrecondition(f"model {model_id} changed while deleting it; retry")
    return read_model(entry)


def read_model(entry: Entry | None) -> ModelRecord | None:
    """A model record read from etcd directly; a value that does not parse is logged and
    treated as absent, as the cluster view treats it."""
    if entry is None:
        return None
    return read_record(ModelRecord, entry.key, entry.value, entry.mod_revision)
