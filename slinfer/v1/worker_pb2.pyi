from slinfer.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LoadInstanceRequest(_message.Message):
    __slots__ = ("instance_id", "model_id", "path", "engine", "kv_capacity_tokens", "weights")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    KV_CAPACITY_TOKENS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    model_id: str
    path: str
    engine: _common_pb2.EngineKind
    kv_capacity_tokens: int
    weights: _common_pb2.WeightFormat
    def __init__(self, instance_id: _Optional[str] = ..., model_id: _Optional[str] = ..., path: _Optional[str] = ..., engine: _Optional[_Union[_common_pb2.EngineKind, str]] = ..., kv_capacity_tokens: _Optional[int] = ..., weights: _Optional[_Union[_common_pb2.WeightFormat, str]] = ...) -> None: ...

class LoadInstanceResponse(_message.Message):
    __slots__ = ("instance", "already_loaded")
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    ALREADY_LOADED_FIELD_NUMBER: _ClassVar[int]
    instance: _common_pb2.InstanceStatus
    already_loaded: bool
    def __init__(self, instance: _Optional[_Union[_common_pb2.InstanceStatus, _Mapping]] = ..., already_loaded: _Optional[bool] = ...) -> None: ...

class UnloadInstanceRequest(_message.Message):
    __slots__ = ("instance_id", "preempt", "min_idle_s")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    PREEMPT_FIELD_NUMBER: _ClassVar[int]
    MIN_IDLE_S_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    preempt: bool
    min_idle_s: float
    def __init__(self, instance_id: _Optional[str] = ..., preempt: _Optional[bool] = ..., min_idle_s: _Optional[float] = ...) -> None: ...

class UnloadInstanceResponse(_message.Message):
    __slots__ = ("requests_aborted",)
    REQUESTS_ABORTED_FIELD_NUMBER: _ClassVar[int]
    requests_aborted: int
    def __init__(self, requests_aborted: _Optional[int] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("request_id", "instance_id", "prompt_token_ids", "sampling", "resumed_token_ids", "deadline")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    RESUMED_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance_id: str
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    sampling: _common_pb2.SamplingParams
    resumed_token_ids: _containers.RepeatedScalarFieldContainer[int]
    deadline: RequestDeadline
    def __init__(self, request_id: _Optional[str] = ..., instance_id: _Optional[str] = ..., prompt_token_ids: _Optional[_Iterable[int]] = ..., sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., resumed_token_ids: _Optional[_Iterable[int]] = ..., deadline: _Optional[_Union[RequestDeadline, _Mapping]] = ...) -> None: ...

class RequestDeadline(_message.Message):
    __slots__ = ("arrival_unix_s", "ttft_slo_s", "tpot_slo_s", "excused_s")
    ARRIVAL_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    TTFT_SLO_S_FIELD_NUMBER: _ClassVar[int]
    TPOT_SLO_S_FIELD_NUMBER: _ClassVar[int]
    EXCUSED_S_FIELD_NUMBER: _ClassVar[int]
    arrival_unix_s: float
    ttft_slo_s: float
    tpot_slo_s: float
    excused_s: float
    def __init__(self, arrival_unix_s: _Optional[float] = ..., ttft_slo_s: _Optional[float] = ..., tpot_slo_s: _Optional[float] = ..., excused_s: _Optional[float] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("request_id", "token_ids", "text", "finished", "finish_reason", "prompt_tokens", "completion_tokens", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    text: str
    finished: bool
    finish_reason: _common_pb2.FinishReason
    prompt_tokens: int
    completion_tokens: int
    error: str
    def __init__(self, request_id: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ..., text: _Optional[str] = ..., finished: _Optional[bool] = ..., finish_reason: _Optional[_Union[_common_pb2.FinishReason, str]] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class AbortRequest(_message.Message):
    __slots__ = ("request_id", "instance_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    instance_id: str
    def __init__(self, request_id: _Optional[str] = ..., instance_id: _Optional[str] = ...) -> None: ...

class AbortResponse(_message.Message):
    __slots__ = ("aborted",)
    ABORTED_FIELD_NUMBER: _ClassVar[int]
    aborted: bool
    def __init__(self, aborted: _Optional[bool] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkerStats(_message.Message):
    __slots__ = ("node", "instances")
    NODE_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    node: _common_pb2.NodeStatus
    instances: _containers.RepeatedCompositeFieldContainer[_common_pb2.InstanceStatus]
    def __init__(self, node: _Optional[_Union[_common_pb2.NodeStatus, _Mapping]] = ..., instances: _Optional[_Iterable[_Union[_common_pb2.InstanceStatus, _Mapping]]] = ...) -> None: ...
