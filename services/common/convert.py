"""Protobuf <-> dataclass conversions, kept at the services' edges (STYLE.md)."""

from __future__ import annotations

from slinfer.policy import DeviceKind
from slinfer.services.common.engine_types import (
    EngineKind,
    FinishReason,
    SamplingParams,
    WeightFormat,
)
from slinfer.services.common.records import InstanceState
from slinfer.v1 import common_pb2

DEFAULT_MAX_TOKENS = 128

FINISH_TO_PB = {
    FinishReason.STOP: common_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: common_pb2.FINISH_REASON_LENGTH,
    FinishReason.ABORT: common_pb2.FINISH_REASON_ABORT,
    FinishReason.PREEMPTED: common_pb2.FINISH_REASON_PREEMPTED,
    FinishReason.ERROR: common_pb2.FINISH_REASON_ERROR,
}
FINISH_FROM_PB = {v: k for k, v in FINISH_TO_PB.items()}

ENGINE_TO_PB = {
    EngineKind.TORCH: common_pb2.ENGINE_KIND_TORCH,
    EngineKind.VLLM: common_pb2.ENGINE_KIND_VLLM,
    EngineKind.OPENVINO: common_pb2.ENGINE_KIND_OPENVINO,
}
ENGINE_FROM_PB: dict[int, EngineKind | None] = {
    common_pb2.ENGINE_KIND_AUTO: None,
    common_pb2.ENGINE_KIND_TORCH: EngineKind.TORCH,
    common_pb2.ENGINE_KIND_VLLM: EngineKind.VLLM,
    common_pb2.ENGINE_KIND_OPENVINO: EngineKind.OPENVINO,
}
DEVICE_TO_PB = {
    DeviceKind.CPU: common_pb2.DEVICE_KIND_CPU,
    DeviceKind.GPU: common_pb2.DEVICE_KIND_GPU,
}
DEVICE_FROM_PB: dict[int, DeviceKind | None] = {
    common_pb2.DEVICE_KIND_AUTO: None,
    common_pb2.DEVICE_KIND_CPU: DeviceKind.CPU,
    common_pb2.DEVICE_KIND_GPU: DeviceKind.GPU,
}
INSTANCE_STATE_TO_PB = {
    InstanceState.LOADING: common_pb2.INSTANCE_STATE_LOADING,
    InstanceState.READY: common_pb2.INSTANCE_STATE_READY,
    InstanceState.DRAINING: common_pb2.INSTANCE_STATE_DRAINING,
    InstanceState.UNLOADING: common_pb2.INSTANCE_STATE_UNLOADING,
    InstanceState.FAILED: common_pb2.INSTANCE_STATE_FAILED,
}
WEIGHTS_TO_PB = {
    WeightFormat.AUTO: common_pb2.WEIGHT_FORMAT_AUTO,
    WeightFormat.FP32: common_pb2.WEIGHT_FORMAT_FP32,
    WeightFormat.BF16: common_pb2.WEIGHT_FORMAT_BF16,
    WeightFormat.INT8: common_pb2.WEIGHT_FORMAT_INT8,
    WeightFormat.INT4: common_pb2.WEIGHT_FORMAT_INT4,
}
WEIGHTS_FROM_PB = {v: k for k, v in WEIGHTS_TO_PB.items()}


def sampling_from_pb(pb: common_pb2.SamplingParams) -> SamplingParams:
    """Validated sampling parameters; InvalidRequest names the bad field and its range."""
    params = SamplingParams(
        temperature=float(pb.temperature) if pb.HasField("temperature") else 1.0,
        top_p=float(pb.top_p) if pb.HasField("top_p") else 1.0,
        max_tokens=int(pb.max_tokens) if pb.HasField("max_tokens") else DEFAULT_MAX_TOKENS,
        stop=tuple(pb.stop),
        seed=int(pb.seed) if pb.HasField("seed") else None,
        ignore_eos=bool(pb.ignore_eos),
        deterministic=bool(pb.deterministic),
    )
    params.validate()
    return params


def sampling_to_pb(params: SamplingParams) -> common_pb2.SamplingParams:
    pb = common_pb2.SamplingParams(
        temperature=params.temperature,
        top_p=params.top_p,
        max_tokens=params.max_tokens,
        stop=list(params.stop),
        ignore_eos=params.ignore_eos,
        deterministic=params.deterministic,
    )
    if params.seed is not None:
        pb.seed = params.seed
    return pb
