"""The cluster view a dispatch decision is taken over (DESIGN.md §4).

Built by the scheduler from its etcd view, or by the simulator from its entities.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from slinfer.policy.model_spec import ModelSpec
from slinfer.policy.perf_model import PerfModel
from slinfer.policy.types import DeviceKind, DeviceLike, InstanceLike


@dataclass(frozen=True, slots=True)
class DispatchView:
    """Everything routing, preemption and placement need for one request.

    - `devices`: node id -> device, in the cluster's order (ties keep it);
    - `candidates`: the request's model's instances, oldest first (round-robin uses this order);
    - `perf_by_label`: the model's predicted latency per (device kind, label); a device whose
      label is missing cannot host the model;
    - `load_free_kinds`: device kinds on which a new instance is resident at once (the
      artifact pre-starts CPU workers); elsewhere a new instance starts LOADING;
    - `rr_cursor`: round-robin position of the model (baselines).
    """

    devices: Mapping[str, DeviceLike]
    candidates: Sequence[InstanceLike]
    model: ModelSpec
    perf_by_label: Mapping[tuple[DeviceKind, str], PerfModel]
    tpot_slo_s: float = 0.25
    mean_output_tokens: float = 512.0
    rr_cursor: int = 0
    load_free_kinds: frozenset[DeviceKind] = field(default_factory=frozenset)
    model_id: str = ""

    @staticmethod
    def freeze_devices(devices: Sequence[DeviceLike]) -> Mapping[str, DeviceLike]:
        return MappingProxyType({d.node_id: d for d in devices})
