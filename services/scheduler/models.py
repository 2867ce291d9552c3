"""Deployed models: validated specs stored at /slinfer/models/{id}."""

from __future__ import annotations

import math
import time
from typing import Any

from slinfer.services.common import keys
from slinfer.services.common.convert import (
    DEVICE_FROM_NAME,
    DEVICE_NAMES,
    ENGINE_FROM_PB,
    ENGINE_TO_PB,
    WEIGHTS_FROM_PB,
    WEIGHTS_TO_PB,
)
from slinfer.services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    ModelNotFound,
)
from slinfer.services.common.model_dir import inspect_model_dir
from slinfer.services.common.store import Store
from slinfer.services.worker.engine.base import EngineKind
from slinfer.services.worker.engine.weight_format import WeightFormat
from slinfer.v1 import gateway_pb2


def _positive(name: str, value: float | None, *, zero_ok: bool = False) -> float | None:
    if value is None:
        return None
    if math.isnan(value) or value < 0 or (value == 0 and not zero_ok):
        raise InvalidArgument(f"{name} must be {'>= 0' if zero_ok else '> 0'}, got {value}")
    return float(value)


def spec_from_request(req: gateway_pb2.DeployModelRequest) -> dict[str, Any]:
    if not keys.valid_name(req.model_id):
        raise InvalidArgument(
            f"model_id {req.model_id!r} is invalid: use 1-64 of [A-Za-z0-9._-], "
            "starting with a letter or digit"
        )
    info = inspect_model_dir(req.path)
    if req.engine not in ENGINE_FROM_PB:
        raise InvalidArgument(f"unknown engine {req.engine}")
    if req.device not in DEVICE_NAMES:
        raise InvalidArgument(f"unknown device {req.device}")
    engine = ENGINE_FROM_PB[req.engine]
    device = DEVICE_NAMES[req.device]
    if engine is EngineKind.OPENVINO and device == "gpu":
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
    return {
        "model_id": req.model_id,
        "path": str(info.path),
        "engine": engine.value if engine else None,
        "device": device,
        "ttft_slo_s": _positive(
            "ttft_slo_s", req.ttft_slo_s if req.HasField("ttft_slo_s") else None
        ),
        "tpot_slo_s": _positive(
            "tpot_slo_s", req.tpot_slo_s if req.HasField("tpot_slo_s") else None
        ),
        "keep_alive_s": _positive(
            "keep_alive_s", req.keep_alive_s if req.HasField("keep_alive_s") else None, zero_ok=True
        ),
        "kv_capacity_tokens": kv,
        "weights": weights.value,
        "max_model_len": info.max_model_len,
        "vocab_size": info.vocab_size,
        "architecture": info.architecture,
        "has_chat_template": info.has_chat_template,
        "created_at": time.time(),
    }


def model_info(
    spec: dict[str, Any], instances: int, defaults: dict[str, float]
) -> gateway_pb2.ModelInfo:
    engine = EngineKind(spec["engine"]) if spec.get("engine") else None
    return gateway_pb2.ModelInfo(
        model_id=spec["model_id"],
        path=spec["path"],
        engine=ENGINE_TO_PB[engine] if engine else 0,
        device=DEVICE_FROM_NAME.get(spec.get("device") or "", 0),
        ttft_slo_s=spec.get("ttft_slo_s") or 0.0,
        tpot_slo_s=spec.get("tpot_slo_s") or defaults["tpot_slo_s"],
        keep_alive_s=spec["keep_alive_s"]
        if spec.get("keep_alive_s") is not None
        else defaults["keep_alive_s"],
        kv_capacity_tokens=spec.get("kv_capacity_tokens") or int(defaults["kv_capacity_tokens"]),
        max_model_len=int(spec.get("max_model_len", 0)),
        architecture=spec.get("architecture", ""),
        instances=instances,
        created_at=float(spec.get("created_at", 0.0)),
        vocab_size=int(spec.get("vocab_size", 0)),
        weights=WEIGHTS_TO_PB[WeightFormat.parse(spec.get("weights"))],
    )


async def deploy(store: Store, spec: dict[str, Any]) -> None:
    if not await store.create(keys.model(spec["model_id"]), spec):
        raise AlreadyExists(
            f"model {spec['model_id']} is already deployed; delete it first or pick another id"
        )


async def delete(store: Store, model_id: str) -> dict[str, Any]:
    entry = await store.get(keys.model(model_id))
    if entry is None:
        raise ModelNotFound(f"model {model_id} is not deployed (see ListModels)")
    if not await store.delete(keys.model(model_id), entry.mod_revision):
        raise FailedPrecondition(f"model {model_id} changed while deleting it; retry")
    return entry.value
