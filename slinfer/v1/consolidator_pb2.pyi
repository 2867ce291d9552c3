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

class PreemptionPlan(_message.Message):
    __slots__ = ("model_id", "target_instance_id", "victim_instance_id", "kind", "destination_node_id", "destination_instance_id", "scheduler_id", "request_id")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    VICTIM_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    target_instance_id: str
    victim_instance_id: str
    kind: PlanKind
    destination_node_id: str
    destination_instance_id: str
    scheduler_id: str
    request_id: str
    def __init__(self, model_id: _Optional[str] = ..., target_instance_id: _Optional[str] = ..., victim_instance_id: _Optional[str] = ..., kind: _Optional[_Union[PlanKind, str]] = ..., destination_node_id: _Optional[str] = ..., destination_instance_id: _Optional[str] = ..., scheduler_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("plan_id", "kind", "created_unix_s", "target_instance_id", "victim_instance_ids", "node_id", "advisory", "executed", "requests_moved", "error", "destination_node_id", "destination_instance_id")
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    TARGET_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    VICTIM_INSTANCE_IDS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADVISORY_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_MOVED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    plan_id: str
    kind: PlanKind
    created_unix_s: float
    target_instance_id: str
    victim_instance_ids: _containers.RepeatedScalarFieldContainer[str]
    node_id: str
    advisory: bool
    executed: bool
    requests_moved: int
    error: str
    destination_node_id: str
    destination_instance_id: str
    def __init__(self, plan_id: _Optional[str] = ..., kind: _Optional[_Union[PlanKind, str]] = ..., created_unix_s: _Optional[float] = ..., target_instance_id: _Optional[str] = ..., victim_instance_ids: _Optional[_Iterable[str]] = ..., node_id: _Optional[str] = ..., advisory: _Optional[bool] = ..., executed: _Optional[bool] = ..., requests_moved: _Optional[int] = ..., error: _Optional[str] = ..., destination_node_id: _Optional[str] = ..., destination_instance_id: _Optional[str] = ...) -> None: ...

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
