from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EngineKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENGINE_KIND_AUTO: _ClassVar[EngineKind]
    ENGINE_KIND_TORCH: _ClassVar[EngineKind]
    ENGINE_KIND_VLLM: _ClassVar[EngineKind]
    ENGINE_KIND_OPENVINO: _ClassVar[EngineKind]

class WeightFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WEIGHT_FORMAT_AUTO: _ClassVar[WeightFormat]
    WEIGHT_FORMAT_FP32: _ClassVar[WeightFormat]
    WEIGHT_FORMAT_BF16: _ClassVar[WeightFormat]
    WEIGHT_FORMAT_INT8: _ClassVar[WeightFormat]
    WEIGHT_FORMAT_INT4: _ClassVar[WeightFormat]

class DeviceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_KIND_AUTO: _ClassVar[DeviceKind]
    DEVICE_KIND_CPU: _ClassVar[DeviceKind]
    DEVICE_KIND_GPU: _ClassVar[DeviceKind]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_ABORT: _ClassVar[FinishReason]
    FINISH_REASON_PREEMPTED: _ClassVar[FinishReason]
    FINISH_REASON_ERROR: _ClassVar[FinishReason]

class InstanceState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INSTANCE_STATE_UNSPECIFIED: _ClassVar[InstanceState]
    INSTANCE_STATE_LOADING: _ClassVar[InstanceState]
    INSTANCE_STATE_READY: _ClassVar[InstanceState]
    INSTANCE_STATE_DRAINING: _ClassVar[InstanceState]
    INSTANCE_STATE_UNLOADING: _ClassVar[InstanceState]
    INSTANCE_STATE_FAILED: _ClassVar[InstanceState]
ENGINE_KIND_AUTO: EngineKind
ENGINE_KIND_TORCH: EngineKind
ENGINE_KIND_VLLM: EngineKind
ENGINE_KIND_OPENVINO: EngineKind
WEIGHT_FORMAT_AUTO: WeightFormat
WEIGHT_FORMAT_FP32: WeightFormat
WEIGHT_FORMAT_BF16: WeightFormat
WEIGHT_FORMAT_INT8: WeightFormat
WEIGHT_FORMAT_INT4: WeightFormat
DEVICE_KIND_AUTO: DeviceKind
DEVICE_KIND_CPU: DeviceKind
DEVICE_KIND_GPU: DeviceKind
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_ABORT: FinishReason
FINISH_REASON_PREEMPTED: FinishReason
FINISH_REASON_ERROR: FinishReason
INSTANCE_STATE_UNSPECIFIED: InstanceState
INSTANCE_STATE_LOADING: InstanceState
INSTANCE_STATE_READY: InstanceState
INSTANCE_STATE_DRAINING: InstanceState
INSTANCE_STATE_UNLOADING: InstanceState
INSTANCE_STATE_FAILED: InstanceState

class SamplingParams(_message.Message):
    __slots__ = ("temperature", "top_p", "max_tokens", "stop", "seed", "ignore_eos", "deterministic")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    IGNORE_EOS_FIELD_NUMBER: _ClassVar[int]
    DETERMINISTIC_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    max_tokens: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    ignore_eos: bool
    deterministic: bool
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., max_tokens: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ..., ignore_eos: _Optional[bool] = ..., deterministic: _Optional[bool] = ...) -> None: ...

class InstanceStatus(_message.Message):
    __slots__ = ("instance_id", "model_id", "node_id", "state", "engine", "running", "waiting", "kv_capacity_tokens", "kv_used_tokens", "kv_bytes_allocated", "weights_bytes", "kv_resizable", "load_s", "iterations", "idle_s", "time_slice", "batch", "kv_planned_bytes", "kv_actual_bytes", "weights")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    KV_CAPACITY_TOKENS_FIELD_NUMBER: _ClassVar[int]
    KV_USED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    KV_BYTES_ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_BYTES_FIELD_NUMBER: _ClassVar[int]
    KV_RESIZABLE_FIELD_NUMBER: _ClassVar[int]
    LOAD_S_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    IDLE_S_FIELD_NUMBER: _ClassVar[int]
    TIME_SLICE_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    KV_PLANNED_BYTES_FIELD_NUMBER: _ClassVar[int]
    KV_ACTUAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    model_id: str
    node_id: str
    state: InstanceState
    engine: EngineKind
    running: int
    waiting: int
    kv_capacity_tokens: int
    kv_used_tokens: int
    kv_bytes_allocated: int
    weights_bytes: int
    kv_resizable: bool
    load_s: float
    iterations: int
    idle_s: float
    time_slice: float
    batch: int
    kv_planned_bytes: int
    kv_actual_bytes: int
    weights: WeightFormat
    def __init__(self, instance_id: _Optional[str] = ..., model_id: _Optional[str] = ..., node_id: _Optional[str] = ..., state: _Optional[_Union[InstanceState, str]] = ..., engine: _Optional[_Union[EngineKind, str]] = ..., running: _Optional[int] = ..., waiting: _Optional[int] = ..., kv_capacity_tokens: _Optional[int] = ..., kv_used_tokens: _Optional[int] = ..., kv_bytes_allocated: _Optional[int] = ..., weights_bytes: _Optional[int] = ..., kv_resizable: _Optional[bool] = ..., load_s: _Optional[float] = ..., iterations: _Optional[int] = ..., idle_s: _Optional[float] = ..., time_slice: _Optional[float] = ..., batch: _Optional[int] = ..., kv_planned_bytes: _Optional[int] = ..., kv_actual_bytes: _Optional[int] = ..., weights: _Optional[_Union[WeightFormat, str]] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("node_id", "kind", "address", "cores", "memory_bytes", "memory_used_bytes", "instances", "reachable", "draining", "memory_ledger_bytes", "memory_planned_bytes")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LEDGER_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_PLANNED_BYTES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    kind: DeviceKind
    address: str
    cores: int
    memory_bytes: int
    memory_used_bytes: int
    instances: int
    reachable: bool
    draining: bool
    memory_ledger_bytes: int
    memory_planned_bytes: int
    def __init__(self, node_id: _Optional[str] = ..., kind: _Optional[_Union[DeviceKind, str]] = ..., address: _Optional[str] = ..., cores: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., memory_used_bytes: _Optional[int] = ..., instances: _Optional[int] = ..., reachable: _Optional[bool] = ..., draining: _Optional[bool] = ..., memory_ledger_bytes: _Optional[int] = ..., memory_planned_bytes: _Optional[int] = ...) -> None: ...
