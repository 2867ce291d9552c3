"""ServerlessLLM baselines as policies (DESIGN.md §6; semantics of the SLINFER artifact).

- admission: only a per-instance concurrency cap from the profiles (`exclusive_max_concurrency`,
  or `shared2_max_concurrency` under static sharing); no SLO-aware validation. A model the
  profiles do not list (a live model measured by its worker) gets caps derived from its own
  tables by `derived_caps`;
- routing: round-robin over the model's instances, starting after the last one used;
- placement: a device with no instance (`sllm`, `sllm+c`), or with fewer than 2 (`sllm+c+s`);
  a CPU socket never shares a 13B model (it occupies the whole socket, artifact);
- KV: sized to the device once at load (whole device minus weights; half of it when shared);
  no scaling;
- static sharing throttles each GPU instance to half the device time: after each grant it
  sleeps until `busy_start + 2 · busy_time` (artifact `sllm_handle_one_iteration_complete`).
  On a CPU socket the artifact lets the two instances share the cores through the OS (no
  throttle); the simulator models that as alternating iterations.
"""

from __future__ import annotations

from collections.abc import Sequence

from slinfer.policy.admission import AdmissionDecision, AdmissionReason
from slinfer.policy.model_spec import ConcurrencyCaps, ModelSpec
from slinfer.policy.perf_model import PerfModel
from slinfer.policy.systems import Sharing, SystemSpec
from slinfer.policy.types import DeviceKind, DeviceLike, InstanceLike, InstancePhase

# Models that fill a whole CPU socket, so static sharing never co-locates them (artifact).
CPU_EXCLUSIVE_MODELS = frozenset({"llama-2-13b"})


def cap_admit(device: DeviceLike, instance: InstanceLike, system: SystemSpec) -> AdmissionDecision:
    if instance.phase is InstancePhase.RELEASING:
        return AdmissionDecision(False, AdmissionReason.NOT_ACCEPTING)
    shared = system.sharing is Sharing.STATIC_2WAY
    cap = instance.spec.concurrency_cap(device.kind, device.label, shared)
    if cap is not None and instance.batch + 1 > cap:
        return AdmissionDecision(False, AdmissionReason.CONCURRENCY_CAP)
    return AdmissionDecision(True, AdmissionReason.ADMITTED)


# The context at which live caps are derived: a typical chat turn (input + output) of the
# replayed traces once scaled to this hardware; the artifact does not publish its rule.
CAP_CONTEXT_TOKENS = 512


def derived_caps(
    perf: PerfModel,
    tpot_slo_s: float,
    context_tokens: float = CAP_CONTEXT_TOKENS,
    max_batch: int = 256,
) -> ConcurrencyCaps:
    """Concurrency caps for a model without published ones, from its measured tables.

    Exclusive: the largest batch whose decode iteration at `context_tokens` (safety factor
    included) meets the TPOT SLO; 2-way shared: the same against half the SLO, since the
    instance gets half the device. At least 1, so an instance always serves one request.
    """
    if tpot_slo_s <= 0:
        raise ValueError(f"tpot_slo_s must be > 0, got {tpot_slo_s}")

    def largest(budget_s: float) -> int:
        best = 1
        for batch in range(1, max_batch + 1):
            if perf.decode_s(context_tokens, batch) > budget_s:
                break
            best = batch
        return best

    return ConcurrencyCaps(exclusive=largest(tpot_slo_s), shared2=largest(tpot_slo_s / 2))


def round_robin(candidates: Sequence[InstanceLike], cursor: int) -> list[tuple[int, InstanceLike]]:
    """(index, instance) pairs starting at `cursor`, wrapping around."""
    n = len(candidates)
    if n == 0:
        return []
    start = cursor % n
    return [((start + k) % n, candidates[(start + k) % n]) for k in range(n)]


def accepts_instance(device: DeviceLike, model: ModelSpec, system: SystemSpec) -> bool:
    """May a device take one more instance of `model` under static or exclusive allocation?"""
    present = len(device.instances)
    if system.shares is not None and present >= system.shares:
        return False
    if device.kind is DeviceKind.CPU and system.sharing is Sharing.STATIC_2WAY:
        holds_exclusive = any(i.model_name in CPU_EXCLUSIVE_MODELS for i in device.instances)
        if holds_exclusive or (present >= 1 and model.name in CPU_EXCLUSIVE_MODELS):
            return False
    return True


def device_sized_kv_bytes(device: DeviceLike, model: ModelSpec, system: SystemSpec) -> int:
    """KV pool of a baseline GPU instance: its share of the device minus its weights."""
    share = device.memory_bytes // (system.shares or 1)
    kv = max(share - model.weights_bytes, 0)
    block = model.block_bytes(device.kind)
    return kv - kv % block


def throttles(system: SystemSpec, kind: DeviceKind) -> bool:
    """Is an instance of `system` on a device of `kind` throttled to its share of time?"""
    return system.sharing is Sharing.STATIC_2WAY and kind is DeviceKind.GPU


def throttle_wakeup_s(busy_start_s: float, busy_time_s: float, shares: int = 2) -> float:
    """Earliest next grant of a statically shared instance: ≤ 1/shares of device time."""
    return busy_start_s + busy_time_s * shares
