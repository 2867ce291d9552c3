from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PlanKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLAN_KIND_UNSPECIFIED: _ClassVar[PlanKind]
    PLAN_KIND_PREEMPT_MEMORY: _ClassVar[PlanKind]
    PLAN_KIND_PREEMPT_DECODE: _ClassVar[PlanKind]
    PLAN_KIND_PREEMPT_OPERATOR: _ClassVar[PlanKind]
    PLAN_KIND_DRAIN: _ClassVar[PlanKind]
    PLAN_KIND_PACK: _ClassVar[PlanKind]
    PLAN_KIND_UNDRAIN: _ClassVar[PlanKind]
PLAN_KIND_UNSPECIFIED: PlanKind
PLAN_KIND_PREEMPT_MEMORY: PlanKind
PLAN_KIND_PREEMPT_DECODE: PlanKind
PLAN_KIND_PREEMPT_OPERATOR: PlanKind
PLAN_KIND_DRAIN: PlanKind
PLAN_KIND_PACK: PlanKind
PLAN_KIND_UNDRAIN: PlanKind

class PendingRequest(_message.Message):
    __slots__ = ("request_id", "arrival_unix_s", "input_tokens", "output_tokens", "ttft_slo_s", "tpot_slo_s", "excused_s")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ARRIVAL_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TTFT_SLO_S_FIELD_NUMBER: _ClassVar[int]
    TPOT_SLO_S_FIELD_NUMBER: _ClassVar[int]
    EXCUSED_S_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    arrival_unix_s: float
    input_tokens: int
    output_tokens: int
    ttft_slo_s: float
    tpot_slo_s: float
    excused_s: float
    def __init__(self, request_id: _Optional[str] = ..., arrival_unix_s: _Optional[float] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., ttft_slo_s: _Optional[float] = ..., tpot_slo_s: _Optional[float] = ..., excused_s: _Optional[float] = ...) -> None: ...

class PlanPreemptionRequest(_message.Message):
    __slots__ = ("model_id", "candidate_instance_ids", "request", "scheduler_id")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_INSTANCE_IDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    candidate_instance_ids: _containers.RepeatedScalarFieldContainer[str]
    request: PendingRequest
    scheduler_id: str
    def __init__(self, model_id: _Optional[str] = ..., candidate_instance_ids: _Optional[_Iterable[str]] = ..., request: _Optional[_Union[PendingRequest, _Mapping]] = ..., scheduler_id: _Optional[str] = ...) -> None: ...

class PreemptRequest(_message.Message):
    __slots__ = ("instance_id",)
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    def __init__(self, instance_id: _Optional[str] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("node_id", "undo", "timeout_s")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    UNDO_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    undo: bool
    timeout_s: float
    def __init__(self, node_id: _Optional[str] = ..., undo: _Optional[bool] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("plan_id", "kind", "created_unix_s", "target_instance_id", "victim_instance_ids", "node_id", "gap", "advisory", "executed", "requests_moved", "error")
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    TARGET_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    VICTIM_INSTANCE_IDS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    GAP_FIELD_NUMBER: _ClassVar[int]
    ADVISORY_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_MOVED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    plan_id: str
    kind: PlanKind
    created_unix_s: float
    target_instance_id: str
    victim_instance_ids: _containers.RepeatedScalarFieldContainer[str]
    node_id: str
    gap: float
    advisory: bool
    executed: bool
    requests_moved: int
    error: str
    def __init__(self, plan_id: _Optional[str] = ..., kind: _Optional[_Union[PlanKind, str]] = ..., created_unix_s: _Optional[float] = ..., target_instance_id: _Optional[str] = ..., victim_instance_ids: _Optional[_Iterable[str]] = ..., node_id: _Optional[str] = ..., gap: _Optional[float] = ..., advisory: _Optional[bool] = ..., executed: _Optional[bool] = ..., requests_moved: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class ListPlansRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListPlansResponse(_message.Message):
    __slots__ = ("plans", "leader", "advisory")
    PLANS_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    ADVISORY_FIELD_NUMBER: _ClassVar[int]
    plans: _containers.RepeatedCompositeFieldContainer[Plan]
    leader: bool
    advisory: bool
    def __init__(self, plans: _Optional[_Iterable[_Union[Plan, _Mapping]]] = ..., leader: _Optional[bool] = ..., advisory: _Optional[bool] = ...) -> None: ...
