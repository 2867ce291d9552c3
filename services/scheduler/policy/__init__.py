"""Pure scheduling policies of slinfer (DESIGN.md §2 and §4).

No gRPC, no etcd, no asyncio, no clock: every decision takes plain data and `now`, and returns a
frozen decision that the caller applies. The live scheduler and the simulator call the same
functions. Public API (import from the submodules, or from here):

- `PerfModel.from_profile(...)`, `PerfModel.from_tables(...)` — iteration latency (§2)
- `ModelSpec.from_profile(...)`, `SloPolicy` — model facts and SLOs
- `deadline_s`, `headroom_s` — headroom (§2)
- `time_slice`, `device_slices`, `lease` — decode budget (§2)
- `Arbiter.decide(device, now) -> Grant | None` — EDF iteration arbiter (§2)
- `shadow_validate(device, instance, request, now) -> AdmissionDecision` — admission (§2)
- `route`, `place`, `decide` (dispatch) — bin-packing (§4); `reclaim_due` — keep-alive (§4)
- `system_spec(SystemName)` — the evaluated systems and baselines (§6)
"""

from slinfer.policy.admission import (
    AdmissionDecision,
    AdmissionReason,
    Check,
    shadow_validate,
)
from slinfer.policy.arbiter import Arbiter, Grant, grant_iterations
from slinfer.policy.config import DEFAULT_CONFIG, PolicyConfig
from slinfer.policy.dispatch import DispatchDecision, DispatchKind, decide
from slinfer.policy.headroom import deadline_s, headroom_s
from slinfer.policy.keep_alive import KeepAlive, reclaim_due
from slinfer.policy.model_spec import ModelSpec
from slinfer.policy.perf_model import Extrapolation, PerfModel
from slinfer.policy.placement import PlacementDecision, place
from slinfer.policy.routing import RouteDecision, route
from slinfer.policy.slo import Slo, SloPolicy
from slinfer.policy.systems import Sharing, SystemName, SystemSpec, system_spec
from slinfer.policy.time_slice import Lease, device_slices, lease, time_slice
from slinfer.policy.types import (
    DeviceKind,
    DeviceLike,
    DeviceView,
    InstanceLike,
    InstancePhase,
    InstanceView,
    RequestLike,
    RequestView,
)
from slinfer.policy.view import DispatchView

__all__ = [
    "DEFAULT_CONFIG",
    "AdmissionDecision",
    "AdmissionReason",
    "Arbiter",
    "Check",
    "DeviceKind",
    "DeviceLike",
    "DeviceView",
    "DispatchDecision",
    "DispatchKind",
    "DispatchView",
    "Extrapolation",
    "Grant",
    "InstanceLike",
    "InstancePhase",
    "InstanceView",
    "KeepAlive",
    "Lease",
    "ModelSpec",
    "PerfModel",
    "PlacementDecision",
    "PolicyConfig",
    "RequestLike",
    "RequestView",
    "RouteDecision",
    "Sharing",
    "Slo",
    "SloPolicy",
    "SystemName",
    "SystemSpec",
    "deadline_s",
    "decide",
    "device_slices",
    "grant_iterations",
    "headroom_s",
    "lease",
    "place",
    "reclaim_due",
    "route",
    "shadow_validate",
    "system_spec",
    "time_slice",
]
