"""One model instance on a worker: its engine, its state and the streams of its requests."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from slinfer.services.common.records import InstanceRecord, InstanceState
from slinfer.services.worker.engine.base import Engine, EngineKind, EngineStats, RequestOutput

if TYPE_CHECKING:
    from slinfer.policy import ModelSpec, PerfModel
    from slinfer.services.worker.arbiter import TrackedRequest


@dataclass
class Instance:
    instance_id: str
    model_id: str
    path: str
    engine_kind: EngineKind
    kv_capacity_tokens: int
    state: InstanceState = InstanceState.LOADING
    engine: Engine | None = None
    load_s: float = 0.0
    loading_since: float = field(default_factory=time.time)  # wall clock the load began
    stats: EngineStats | None = None  # refreshed by the device loop after each engine call
    # request id -> queue of RequestOutput (None closes the stream)
    streams: dict[str, asyncio.Queue[RequestOutput | None]] = field(default_factory=dict)
    # request id -> what the arbiter needs for its headroom
    requests: dict[str, TrackedRequest] = field(default_factory=dict)
    idle_since: float = field(default_factory=time.monotonic)
    error: str = ""
    perf: PerfModel | None = None  # from the profile measured (or cached) at load
    spec: ModelSpec | None = None
    profile: dict[str, Any] | None = None
    profile_s: float = 0.0

    @property
    def busy(self) -> bool:
        return bool(self.streams)

    def idle_s(self, now: float) -> float:
        return 0.0 if self.busy else max(0.0, now - self.idle_since)

    def record(self, node_id: str) -> InstanceRecord:
        """What etcd holds of this instance (under the node's lease)."""
        s = self.stats
        return InstanceRecord(
            instance_id=self.instance_id,
            model_id=self.model_id,
            node_id=node_id,
            state=self.state,
            engine=self.engine_kind,
            path=self.path,
            kv_capacity_tokens=s.kv_capacity_tokens if s else self.kv_capacity_tokens,
            kv_bytes_per_token=s.kv_bytes_per_token if s else 0,
            kv_resizable=s.kv_resizable if s else False,
            weights_bytes=s.weights_bytes if s else 0,
            max_model_len=s.max_model_len if s else 0,
            load_s=round(self.load_s, 4),
            loading_since=self.loading_since,
            profile_s=round(self.profile_s, 4),
            error=self.error,
        )
