from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LedgerStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEDGER_STATUS_UNSPECIFIED: _ClassVar[LedgerStatus]
    LEDGER_STATUS_APPLIED: _ClassVar[LedgerStatus]
    LEDGER_STATUS_DEFERRED: _ClassVar[LedgerStatus]
    LEDGER_STATUS_REJECTED: _ClassVar[LedgerStatus]
LEDGER_STATUS_UNSPECIFIED: LedgerStatus
LEDGER_STATUS_APPLIED: LedgerStatus
LEDGER_STATUS_DEFERRED: LedgerStatus
LEDGER_STATUS_REJECTED: LedgerStatus

class InstanceChange(_message.Message):
    __slots__ = ("node_id", "instance_id", "request_id", "revision")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    instance_id: str
    request_id: str
    revision: int
    def __init__(self, node_id: _Optional[str] = ..., instance_id: _Optional[str] = ..., request_id: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class ScaleKVRequest(_message.Message):
    __slots__ = ("change", "kv_bytes")
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    KV_BYTES_FIELD_NUMBER: _ClassVar[int]
    change: InstanceChange
    kv_bytes: int
    def __init__(self, change: _Optional[_Union[InstanceChange, _Mapping]] = ..., kv_bytes: _Optional[int] = ...) -> None: ...

class LoadWeightsRequest(_message.Message):
    __slots__ = ("change", "weights_bytes")
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_BYTES_FIELD_NUMBER: _ClassVar[int]
    change: InstanceChange
    weights_bytes: int
    def __init__(self, change: _Optional[_Union[InstanceChange, _Mapping]] = ..., weights_bytes: _Optional[int] = ...) -> None: ...

class Approval(_message.Message):
    __slots__ = ("instance_id", "revision", "weights_bytes", "kv_bytes")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_BYTES_FIELD_NUMBER: _ClassVar[int]
    KV_BYTES_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    revision: int
    weights_bytes: int
    kv_bytes: int
    def __init__(self, instance_id: _Optional[str] = ..., revision: _Optional[int] = ..., weights_bytes: _Optional[int] = ..., kv_bytes: _Optional[int] = ...) -> None: ...

class LedgerResponse(_message.Message):
    __slots__ = ("status", "revision", "approvals", "message", "node_planned_bytes", "node_capacity_bytes")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NODE_PLANNED_BYTES_FIELD_NUMBER: _ClassVar[int]
    NODE_CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    status: LedgerStatus
    revision: int
    approvals: _containers.RepeatedCompositeFieldContainer[Approval]
    message: str
    node_planned_bytes: int
    node_capacity_bytes: int
    def __init__(self, status: _Optional[_Union[LedgerStatus, str]] = ..., revision: _Optional[int] = ..., approvals: _Optional[_Iterable[_Union[Approval, _Mapping]]] = ..., message: _Optional[str] = ..., node_planned_bytes: _Optional[int] = ..., node_capacity_bytes: _Optional[int] = ...) -> None: ...

class CompletionReport(_message.Message):
    __slots__ = ("node_id", "instance_id", "revision", "weights_bytes_allocated", "kv_bytes_allocated")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_BYTES_ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    KV_BYTES_ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    instance_id: str
    revision: int
    weights_bytes_allocated: int
    kv_bytes_allocated: int
    def __init__(self, node_id: _Optional[str] = ..., instance_id: _Optional[str] = ..., revision: _Optional[int] = ..., weights_bytes_allocated: _Optional[int] = ..., kv_bytes_allocated: _Optional[int] = ...) -> None: ...

class CompletionResponse(_message.Message):
    __slots__ = ("released",)
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    released: _containers.RepeatedCompositeFieldContainer[Approval]
    def __init__(self, released: _Optional[_Iterable[_Union[Approval, _Mapping]]] = ...) -> None: ...

class GetLedgerRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class InstanceLedger(_message.Message):
    __slots__ = ("instance_id", "revision", "planned_weights_bytes", "planned_kv_bytes", "actual_weights_bytes", "actual_kv_bytes", "reported_bytes", "deferred")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    PLANNED_WEIGHTS_BYTES_FIELD_NUMBER: _ClassVar[int]
    PLANNED_KV_BYTES_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_WEIGHTS_BYTES_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_KV_BYTES_FIELD_NUMBER: _ClassVar[int]
    REPORTED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEFERRED_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    revision: int
    planned_weights_bytes: int
    planned_kv_bytes: int
    actual_weights_bytes: int
    actual_kv_bytes: int
    reported_bytes: int
    deferred: bool
    def __init__(self, instance_id: _Optional[str] = ..., revision: _Optional[int] = ..., planned_weights_bytes: _Optional[int] = ..., planned_kv_bytes: _Optional[int] = ..., actual_weights_bytes: _Optional[int] = ..., actual_kv_bytes: _Optional[int] = ..., reported_bytes: _Optional[int] = ..., deferred: _Optional[bool] = ...) -> None: ...

class NodeLedger(_message.Message):
    __slots__ = ("node_id", "capacity_bytes", "planned_bytes", "actual_bytes", "reported_bytes", "instances", "actions", "deferred")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    PLANNED_BYTES_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    REPORTED_BYTES_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    DEFERRED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    capacity_bytes: int
    planned_bytes: int
    actual_bytes: int
    reported_bytes: int
    instances: _containers.RepeatedCompositeFieldContainer[InstanceLedger]
    actions: _containers.RepeatedCompositeFieldContainer[Approval]
    deferred: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_id: _Optional[str] = ..., capacity_bytes: _Optional[int] = ..., planned_bytes: _Optional[int] = ..., actual_bytes: _Optional[int] = ..., reported_bytes: _Optional[int] = ..., instances: _Optional[_Iterable[_Union[InstanceLedger, _Mapping]]] = ..., actions: _Optional[_Iterable[_Union[Approval, _Mapping]]] = ..., deferred: _Optional[_Iterable[str]] = ...) -> None: ...
