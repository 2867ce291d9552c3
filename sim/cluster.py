"""Cluster description for the simulator (DESIGN.md §6; defaults from the SLINFER artifact).

Default: 4 CPU nodes (profile label `cpu`: one 32-core AMX Xeon socket each) and 4 GPUs (label
`gpu`: A100-80GB), as the paper's testbed. Per node:

- usable memory `usable_gb − per_instance_overhead_gb · slots` (profiles `node_memory`: A100
  78 GB minus 1.5 GB per instance process; CPU 256 GB);
- `slots`: instance processes started per device, as the artifact's run scripts do
  (`--worker_num`: GPU 8/4/2 and CPU 4/2/1 for 3B/7B/13B), an upper bound on co-located
  instances.

Cold start: a new instance must load its weights first; `gpu_load_gbps` (default 20 GB/s) and
`cpu_load_gbps` (default 0 = resident at once, as the artifact's pre-started CPU workers; e.g.
10 for a CPU node that copies a distinct model from its page cache) set the load time
`weights / bandwidth`. See docs/SIMULATOR.md for why.

A JSON description (`--cluster PATH`) looks like:
`{"nodes": [{"kind": "gpu", "label": "gpu", "count": 4, "usable_gb": 78,
   "per_instance_overhead_gb": 1.5, "slots": 4}, …], "gpu_load_gbps": 20, "cpu_load_gbps": 0,
   "keep_alive_gpu_s": 1, "keep_alive_cpu_s": 0}`; omitted fields take the defaults above.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from slinfer.policy.keep_alive import KeepAlive
from slinfer.policy.model_spec import GIB, MODEL_ALIASES
from slinfer.policy.types import DeviceKind

DEFAULT_SLOTS: Mapping[DeviceKind, Mapping[str, int]] = MappingProxyType(
    {
        DeviceKind.GPU: MappingProxyType(
            {"llama-3.2-3b": 8, "llama-2-7b": 4, "llama-3.1-8b": 4, "llama-2-13b": 2}
        ),
        DeviceKind.CPU: MappingProxyType(
            {"llama-3.2-3b": 4, "llama-2-7b": 2, "llama-3.1-8b": 2, "llama-2-13b": 1}
        ),
    }
)
DEFAULT_GPU_LOAD_GBPS = 20.0
DEFAULT_CPU_LOAD_GBPS = 0.0  # resident at once: the artifact pre-starts its CPU workers


@dataclass(frozen=True, slots=True)
class NodeSpec:
    node_id: str
    kind: DeviceKind
    label: str
    usable_gb: float
    per_instance_overhead_gb: float
    slots: int

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError(f"{self.node_id}: slots must be >= 1")
        if self.memory_bytes <= 0:
            raise ValueError(f"{self.node_id}: no usable memory left after per-slot overhead")

    @property
    def memory_bytes(self) -> int:
        return int((self.usable_gb - self.per_instance_overhead_gb * self.slots) * GIB)


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    nodes: tuple[NodeSpec, ...]
    gpu_load_gbps: float = DEFAULT_GPU_LOAD_GBPS
    cpu_load_gbps: float = DEFAULT_CPU_LOAD_GBPS
    keep_alive: KeepAlive = field(default_factory=KeepAlive)

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ValueError("a cluster needs at least one node")
        if self.gpu_load_gbps < 0 or self.cpu_load_gbps < 0:
            raise ValueError("load bandwidths must be >= 0 (0 = loading is instant)")
        ids = [n.node_id for n in self.nodes]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate node ids: {ids}")

    def load_s(self, kind: DeviceKind, weights_bytes: int) -> float:
        gbps = self.gpu_load_gbps if kind is DeviceKind.GPU else self.cpu_load_gbps
        return 0.0 if gbps == 0 else weights_bytes / (gbps * GIB)

    def load_free_kinds(self) -> frozenset[DeviceKind]:
        free = set()
        if self.gpu_load_gbps == 0:
            free.add(DeviceKind.GPU)
        if self.cpu_load_gbps == 0:
            free.add(DeviceKind.CPU)
        return frozenset(free)

    def count(self, kind: DeviceKind) -> int:
        return sum(1 for n in self.nodes if n.kind is kind)


def _node_group(
    entry: Mapping[str, Any], model: str, profile: Mapping[str, Any], start: int
) -> list[NodeSpec]:
    kind = DeviceKind(entry.get("kind", "gpu"))
    defaults = profile.get("node_memory", {}).get(kind.value, {})
    usable = float(
        entry.get("usable_gb", defaults.get("usable_gb", 78 if kind is DeviceKind.GPU else 256))
    )
    overhead = float(
        entry.get("per_instance_overhead_gb", defaults.get("per_instance_overhead_gb", 0.0))
    )
    slots = int(entry.get("slots", DEFAULT_SLOTS[kind].get(model, 1)))
    label = str(entry.get("label", kind.value))
    count = int(entry.get("count", 1))
    return [
        NodeSpec(f"{kind.value}{start + i}", kind, label, usable, overhead, slots)
        for i in range(count)
    ]


def cluster_from_dict(
    data: Mapping[str, Any], model: str, profile: Mapping[str, Any]
) -> ClusterSpec:
    model = MODEL_ALIASES.get(model, model)
    nodes: list[NodeSpec] = []
    counters = {DeviceKind.CPU: 0, DeviceKind.GPU: 0}
    for entry in data.get("nodes", []):
        group = _node_group(entry, model, profile, counters[DeviceKind(entry.get("kind", "gpu"))])
        counters[group[0].kind] += len(group) if group else 0
        nodes.extend(group)
    keep = KeepAlive(
        float(data.get("keep_alive_gpu_s", 1.0)), float(data.get("keep_alive_cpu_s", 0.0))
    )
    return ClusterSpec(
        tuple(nodes),
        float(data.get("gpu_load_gbps", DEFAULT_GPU_LOAD_GBPS)),
        float(data.get("cpu_load_gbps", DEFAULT_CPU_LOAD_GBPS)),
        keep,
    )


def default_cluster(
    model: str, profile: Mapping[str, Any], cpu_nodes: int = 4, gpu_nodes: int = 4
) -> ClusterSpec:
    groups = []
    if cpu_nodes:
        groups.append({"kind": "cpu", "label": "cpu", "count": cpu_nodes})
    if gpu_nodes:
        groups.append({"kind": "gpu", "label": "gpu", "count": gpu_nodes})
    return cluster_from_dict({"nodes": groups}, model, profile)


def load_cluster(path: Path, model: str, profile: Mapping[str, Any]) -> ClusterSpec:
    with open(path, encoding="utf-8") as f:
        return cluster_from_dict(json.load(f), model, profile)
