"""What every part of a worker shares: the node, its registration, its device, its instances.

The worker's parts (lifecycle.py: load, unload, evict; requests.py: submit, abort;
memory_agent.py: the ledger's side; status.py: the Stats answer) each hold this context and
publish through it, never through each other. The node record in etcd carries what admission
reads of the device (DESIGN.md §2): its measured prefill share ρ, its observed/predicted
iteration ratio and its load throughput, republished when they move.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger

from slinfer.policy import DEFAULT_CONFIG, DeviceKind, PolicyConfig
from slinfer.services.common import keys
from slinfer.services.common.records import NodeRecord
from slinfer.services.common.security import Security
from slinfer.services.common.store import Registration, Store
from slinfer.services.worker.arbiter import DeviceArbiter
from slinfer.services.worker.calibration import hardware_label
from slinfer.services.worker.device import Device
from slinfer.services.worker.engine.dtype import DTypePolicy, cpu_dtype_from_env, dtype_bytes
from slinfer.services.worker.instance import Instance
from slinfer.services.worker.profiler import ProfileGrid


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    etcd: str
    listen: str = "127.0.0.1:0"
    advertise: str = ""  # address published in etcd; default: the listen address
    node_id: str = ""
    kind: str = "cpu"
    cores: int = 0  # 0: all cores of this process
    memory_bytes: int = 8 << 30  # what this node offers to weights + KV
    num_threads: int | None = None
    # dtype of the CPU engines; default: $SLINFER_CPU_DTYPE, else AUTO (engine/dtype.py)
    cpu_dtype: DTypePolicy = field(default_factory=cpu_dtype_from_env)
    lease_ttl_s: int = 10
    profile_grid: ProfileGrid = ProfileGrid()
    profile_dir: Path | None = None  # default: $SLINFER_HOME/profiles
    # Authentication and TLS (security.py): only the cluster token may call a worker.
    security: Security = field(default_factory=Security.from_env)

    def __post_init__(self) -> None:
        if self.kind not in ("cpu", "gpu"):
            raise ValueError(f"node kind must be cpu or gpu, got {self.kind!r}")
        if self.memory_bytes <= 0:
            raise ValueError("memory_bytes must be positive")
        if not isinstance(self.cpu_dtype, DTypePolicy):
            raise ValueError(f"cpu_dtype must be a DTypePolicy, got {self.cpu_dtype!r}")
        if self.node_id and not keys.valid_name(self.node_id):
            raise ValueError(f"invalid node id {self.node_id!r}")


# Republish the node's calibration when ρ moved by this much, or the ratio, load throughput
# or per-iteration overhead by this fraction.
_RHO_STEP = 0.02
_RATIO_STEP = 0.05


class NodeContext:
    def __init__(self, config: WorkerConfig, policy: PolicyConfig = DEFAULT_CONFIG) -> None:
        self.config = config
        self.node_id = config.node_id or f"{config.kind}-{uuid.uuid4().hex[:8]}"
        self.kind = DeviceKind.GPU if config.kind == "gpu" else DeviceKind.CPU
        self.store = Store(config.etcd)
        self.threads = config.num_threads or config.cores or (os.cpu_count() or 1)
        self.label = hardware_label(config.kind, self.threads)
        # Bytes per weight and KV element of this node's engines, for plans made before an
        # instance has measured itself: its CPU dtype here, fp32 (the widest) on GPUs.
        self.dtype_bytes = dtype_bytes(config.cpu_dtype) if config.kind == "cpu" else 4
        self.arbiter = DeviceArbiter(
            self.node_id, self.kind, self.label, config.memory_bytes, policy
        )
        self.device = Device(self.node_id, self.arbiter, policy.prefill_window_s)
        self.instances: dict[str, Instance] = self.device.instances
        self.registration: Registration | None = None
        self.address = ""
        self.started_at = time.time()
        self._published = (0.0, 1.0, 0.0, 0.0)  # (ρ, ratio, load B/s, overhead s) written

    @property
    def device_name(self) -> str:
        """The engines' device: "cuda" on GPU nodes, "cpu" elsewhere."""
        return "cuda" if self.config.kind == "gpu" else "cpu"

    def node_record(self) -> NodeRecord:
        cal = self.device.calibration
        return NodeRecord(
            node_id=self.node_id,
            kind=self.kind,
            address=self.address,
            cores=self.config.cores or (os.cpu_count() or 1),
            label=self.label,
            memory_bytes=self.config.memory_bytes,
            started_at=self.started_at,
            dtype_bytes=self.dtype_bytes,
            # What admission reads of this device (DESIGN.md §2; calibration.py).
            prefill_share=round(cal.prefill.share(time.time()), 4),
            perf_ratio=round(cal.ratio.value, 4),
            load_bytes_per_s=round(cal.load_bytes_per_s, 1),
            # Wall time of an iteration beyond the engine's own step: what the simulator adds
            # per iteration when it models this node (sim/live.py).
            iteration_overhead_s=round(cal.overhead_s, 6),
        )

    async def register(self) -> None:
        self.registration = Registration(
            self.store,
            keys.node(self.node_id),
            self.node_record().to_etcd(),
            ttl_s=self.config.lease_ttl_s,
            on_renewed=self.rewrite_instances,
        )
        await self.registration.start()

    async def publish(self, inst: Instance) -> None:
        """Write an instance's record under the node's lease."""
        assert self.registration is not None
        await self.store.put(
            keys.instance(inst.instance_id),
            inst.record(self.node_id).to_etcd(),
            lease=self.registration.lease_id,
        )

    async def forget(self, instance_id: str) -> None:
        with contextlib.suppress(Exception):
            await self.store.delete(keys.instance(instance_id))

    async def rewrite_instances(self, lease_id: int) -> None:
        for inst in list(self.instances.values()):
            await self.store.put(
                keys.instance(inst.instance_id),
                inst.record(self.node_id).to_etcd(),
                lease=lease_id,
            )

    async def publish_calibration(self, every_s: float = 1.0) -> None:
        """Republish the node record when ρ, the iteration ratio, the load throughput or the
        per-iteration overhead moved (DESIGN.md §2, §6)."""
        while True:
            await asyncio.sleep(every_s)
            record = self.node_record()
            now = (
                record.prefill_share,
                record.perf_ratio,
                record.load_bytes_per_s,
                record.iteration_overhead_s,
            )
            rho, ratio, load, overhead = self._published
            if (
                abs(now[0] - rho) < _RHO_STEP
                and abs(now[1] - ratio) < _RATIO_STEP * ratio
                and abs(now[2] - load) <= _RATIO_STEP * load
                and abs(now[3] - overhead) <= _RATIO_STEP * overhead
            ):
                continue
            try:
                assert self.registration is not None
                await self.registration.update(record.to_etcd())
                self._published = now
            except Exception as exc:  # advisory for one cycle; the next one retries
                logger.warning("node record update failed: {}", exc)
