"""Deployed models: validated specs stored at /slinfer/models/{id} (`ModelRecord`)."""

from __future__ import annotations

import math
import time

from slinfer.policy import DeviceKind
from slinfer.services.common import keys
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
from slinfer.services.common.model_dir import inspect_model_dir
from slinfer.services.common.records import ModelRecord, read_record
from slinfer.services.common.store import Entry, Store
from slinfer.v1 import common_pb2, gateway_pb2


def _positive(name: str, value: float | None, *, zero_ok: bool = False) -> float | None:
    if value is None:
        return None
    if math.isnan(value) or value < 0 or (value == 0 and not zero_ok):
        raise InvalidArgument(f"{name} must be {'>= 0' if zero_ok else '> 0'}, got {value}")
    return float(value)


def spec_from_request(req: gateway_pb2.DeployModelRequest) -> ModelRecord:
    if not keys.valid_name(req.model_id):
        raise InvalidArgument(
            f"model_id {req.model_id!r} is invalid: use 1-64 of [A-Za-z0-9._-], "
            "starting with a letter or digit"
        )
    info = inspect_model_dir(req.path)
    if req.engine not in ENGINE_FROM_PB:
        raise InvalidArgument(f"unknown engine {req.engine}")
    if req.device not in DEVICE_FROM_PB:
        raise InvalidArgument(f"unknown device {req.device}")
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
    if kv is not None and kv <= 0:
        raise InvalidArgument(f"kv_capacity_tokens must be > 0, got {kv}")
    return ModelRecord(
        model_id=req.model_id,
        path=str(info.path),
        engine=engine,
        device=device,
        ttft_slo_s=_positive("ttft_slo_s", req.ttft_slo_s if req.HasField("ttft_slo_s") else None),
        tpot_slo_s=_positive("tpot_slo_s", req.tpot_slo_s if req.HasField("tpot_slo_s") else None),
        keep_alive_s=_positive(
            "keep_alive_s", req.keep_alive_s if req.HasField("keep_alive_s") else None, zero_ok=True
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


async def delete(store: Store, model_id: str) -> ModelRecord | None:
    """Delete the model's record; returns what it said (None if it could not be read)."""
    entry = await store.get(keys.model(model_id))
    if entry is None:
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
