"""Typed etcd records: nodes, instances and deployed models, parsed in one place.

Writers build a record and store `to_etcd()`; readers parse the JSON value with `from_etcd`
(the cluster view does so at the watch edge, services/cluster/state.py), so a field written
has one typed home and nobody compares state strings. Parsing is tolerant where age explains
a difference and strict where a value is wrong:

- an unknown field is ignored (a newer writer's);
- a missing field takes its default (an older writer's: a worker from before calibration
  publishes no ρ, iteration ratio or load throughput);
- a field of the wrong type, an unknown enum value or a missing required field raises
  `MalformedRecord`; the reader logs and skips that one record.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from loguru import logger

from slinfer.policy import DeviceKind
from slinfer.services.common.engine_types import EngineKind, WeightFormat

E = TypeVar("E", bound=enum.Enum)


class MalformedRecord(ValueError):
    """An etcd value that cannot be read as its record (wrong type, unknown state, ...)."""


class InstanceState(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    UNLOADING = "unloading"
    FAILED = "failed"


class _Required:
    """The default of a field that must be present."""


REQUIRED = _Required()
D = TypeVar("D")


class _Fields:
    """One etcd value's fields, each read with its type checked. A field that is missing or
    null takes `default`; without a default it is required."""

    def __init__(self, what: str, value: Any) -> None:
        if not isinstance(value, Mapping):
            raise MalformedRecord(f"{what} record is {type(value).__name__}, not an object")
        self.what, self.value = what, value

    def _default(self, name: str, default: D | _Required) -> D:
        if isinstance(default, _Required):
            raise MalformedRecord(f"{self.what} record: {name} is missing")
        return default

    def _bad(self, name: str, raw: Any, expected: str) -> MalformedRecord:
        return MalformedRecord(f"{self.what} record: {name} is {raw!r}, expected {expected}")

    def text(self, name: str, default: D | _Required = REQUIRED) -> str | D:
        raw = self.value.get(name)
        if raw is None:
            return self._default(name, default)
        if not isinstance(raw, str):
            raise self._bad(name, raw, "a string")
        return raw

    def integer(self, name: str, default: D | _Required = REQUIRED) -> int | D:
        raw = self.value.get(name)
        if raw is None:
            return self._default(name, default)
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise self._bad(name, raw, "an integer")
        return raw

    def number(self, name: str, default: D | _Required = REQUIRED) -> float | D:
        raw = self.value.get(name)
        if raw is None:
            return self._default(name, default)
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            raise self._bad(name, raw, "a finite number")
        return float(raw)

    def flag(self, name: str, default: D | _Required = REQUIRED) -> bool | D:
        raw = self.value.get(name)
        if raw is None:
            return self._default(name, default)
        if not isinstance(raw, bool):
            raise self._bad(name, raw, "true or false")
        return raw

    def choice(self, name: str, cls: type[E], default: D | _Required = REQUIRED) -> E | D:
        raw = self.value.get(name)
        if raw is None:
            return self._default(name, default)
        try:
            return cls(raw)
        except ValueError:
            values = ", ".join(str(m.value) for m in cls)
            raise self._bad(name, raw, f"one of {values}") from None


def _value(x: Any) -> Any:
    return x.value if isinstance(x, enum.Enum) else x


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """`nodes/{node}`: a worker's node as it measured it (worker/node.py, DESIGN.md §2)."""

    node_id: str
    address: str
    kind: DeviceKind = DeviceKind.CPU
    cores: int = 0
    memory_bytes: int = 0  # what the node offers to weights + KV
    label: str = ""  # hardware label of its perf tables; default: the kind's name
    started_at: float = 0.0  # wall clock of the worker's start (a new incarnation)
    dtype_bytes: int | None = None  # of its engines (2: bf16, 4: fp32); None: not published
    # What admission reads of the device; the defaults are "not measured yet".
    prefill_share: float = 0.0  # ρ
    perf_ratio: float = 1.0  # observed / predicted iteration time
    load_bytes_per_s: float = 0.0  # 0: no load measured
    iteration_overhead_s: float = 0.0
    mod_revision: int | None = None  # of the etcd key read; None: built by its writer

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.kind.value)

    @classmethod
    def from_etcd(cls, value: Any, mod_revision: int | None = None) -> NodeRecord:
        f = _Fields("node", value)
        ratio = f.number("perf_ratio", 1.0)
        return cls(
            node_id=f.text("node_id"),
            address=f.text("address"),
            kind=f.choice("kind", DeviceKind, DeviceKind.CPU),
            cores=f.integer("cores", 0),
            memory_bytes=f.integer("memory_bytes", 0),
            label=f.text("label", ""),
            started_at=f.number("started_at", 0.0),
            dtype_bytes=f.integer("dtype_bytes", None) or None,
            prefill_share=f.number("prefill_share", 0.0),
            perf_ratio=ratio if ratio > 0 else 1.0,  # a ratio is positive: else unmeasured
            load_bytes_per_s=f.number("load_bytes_per_s", 0.0),
            iteration_overhead_s=f.number("iteration_overhead_s", 0.0),
            mod_revision=mod_revision,
        )

    def to_etcd(self) -> dict[str, Any]:
        return _to_etcd(self)


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """`instances/{instance}`: a model instance on a worker (worker/instance.py)."""

    instance_id: str
    model_id: str
    node_id: str
    state: InstanceState
    engine: EngineKind | None = None  # None: not known yet (a load the scheduler asked for)
    path: str = ""
    weights: WeightFormat = WeightFormat.AUTO  # the format it runs (AUTO: not resolved yet)
    kv_capacity_tokens: int = 0
    kv_bytes_per_token: int = 0  # 0: not measured yet (the engine is not up)
    kv_resizable: bool = False
    kv_block_tokens: int = 16  # KV targets in whole blocks (OpenVINO 32, PyTorch 16)
    weights_bytes: int = 0  # 0: not measured yet
    max_model_len: int = 0
    load_s: float = 0.0
    loading_since: float | None = None  # wall clock the load began
    profile_s: float = 0.0
    error: str = ""
    mod_revision: int | None = None

    @property
    def footprint_bytes(self) -> int:
        """Weights + KV as the instance measured them (0 before its engine is up)."""
        return self.weights_bytes + self.kv_capacity_tokens * self.kv_bytes_per_token

    @classmethod
    def from_etcd(cls, value: Any, mod_revision: int | None = None) -> InstanceRecord:
        f = _Fields("instance", value)
        return cls(
            instance_id=f.text("instance_id"),
            model_id=f.text("model_id"),
            node_id=f.text("node_id"),
            state=f.choice("state", InstanceState),
            engine=f.choice("engine", EngineKind, None),
            path=f.text("path", ""),
            weights=f.choice("weights", WeightFormat, WeightFormat.AUTO),
            kv_capacity_tokens=f.integer("kv_capacity_tokens", 0),
            kv_bytes_per_token=f.integer("kv_bytes_per_token", 0),
            kv_resizable=f.flag("kv_resizable", False),
            kv_block_tokens=f.integer("kv_block_tokens", 16),
            weights_bytes=f.integer("weights_bytes", 0),
            max_model_len=f.integer("max_model_len", 0),
            load_s=f.number("load_s", 0.0),
            loading_since=f.number("loading_since", None),
            profile_s=f.number("profile_s", 0.0),
            error=f.text("error", ""),
            mod_revision=mod_revision,
        )

    def to_etcd(self) -> dict[str, Any]:
        return _to_etcd(self)


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """`models/{model}`: a deployed model (scheduler/models.py). None: the default applies
    (the engine and device the cluster picks, the scheduler's SLOs and keep-alive)."""

    model_id: str
    path: str
    engine: EngineKind | None = None
    device: DeviceKind | None = None
    ttft_slo_s: float | None = None
    tpot_slo_s: float | None = None
    keep_alive_s: float | None = None
    kv_capacity_tokens: int | None = None
    max_model_len: int = 0
    vocab_size: int = 0
    architecture: str = ""
    has_chat_template: bool = False
    created_at: float = 0.0
    weights: WeightFormat = WeightFormat.AUTO  # AUTO: each worker resolves it
    tenant: str = ""  # the tenant that deployed it ("": the default tenant, auth.py)
    mod_revision: int | None = None

    @classmethod
    def from_etcd(cls, value: Any, mod_revision: int | None = None) -> ModelRecord:
        f = _Fields("model", value)
        return cls(
            model_id=f.text("model_id"),
            path=f.text("path"),
            engine=f.choice("engine", EngineKind, None),
            device=f.choice("device", DeviceKind, None),
            ttft_slo_s=f.number("ttft_slo_s", None),
            tpot_slo_s=f.number("tpot_slo_s", None),
            keep_alive_s=f.number("keep_alive_s", None),
            kv_capacity_tokens=f.integer("kv_capacity_tokens", None),
            weights=f.choice("weights", WeightFormat, WeightFormat.AUTO),
            max_model_len=f.integer("max_model_len", 0),
            vocab_size=f.integer("vocab_size", 0),
            architecture=f.text("architecture", ""),
            has_chat_template=f.flag("has_chat_template", False),
            created_at=f.number("created_at", 0.0),
            tenant=f.text("tenant", ""),
            mod_revision=mod_revision,
        )

    def to_etcd(self) -> dict[str, Any]:
        return _to_etcd(self)


def _to_etcd(record: NodeRecord | InstanceRecord | ModelRecord) -> dict[str, Any]:
    """Every field but the revision (etcd's, not the value's); enums as their values."""
    return {
        name: _value(getattr(record, name))
        for name in record.__dataclass_fields__
        if name != "mod_revision"
    }


R = TypeVar("R", NodeRecord, InstanceRecord, ModelRecord)


def read_record(cls: type[R], key: str, value: Any, mod_revision: int | None) -> R | None:
    """The record etcd holds at `key`, or None (logged) when its value does not parse: one
    unreadable record must never stop a reader (the watch loop, a gateway call)."""
    try:
        return cls.from_etcd(value, mod_revision)
    except MalformedRecord as exc:
        logger.warning("skipping {} at revision {}: {}", key, mod_revision, exc)
        return None
