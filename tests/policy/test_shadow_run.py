"""The shadow run grants exactly what the workers' `Arbiter.decide` would (DESIGN.md §2).

`reference_run` below re-runs a device the slow, obvious way: after every grant it rebuilds
plain `InstanceView`s and asks `Arbiter.decide` which instance runs next. The fast shadow run
(heap ordered by the arbiter's key, decoders advanced together) must reach the same verdict
after the same number of iterations on random devices, CPU and GPU (multi-iteration grants),
with pending prefills, late requests and loading instances. Decode tables are flat so that
the fast run's linear-in-context decode time is exact.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from slinfer.policy.arbiter import Arbiter
from slinfer.policy.config import PolicyConfig
from slinfer.policy.headroom import deadline_s
from slinfer.policy.shadow_run import shadow_run
from slinfer.policy.types import DeviceKind, DeviceView, InstancePhase, InstanceView, RequestView
from tests.policy.factories import device, flat_perf, instance, req

CONFIG = PolicyConfig(slo_margin=0.95)


def _limit(r: RequestView, start: float, margin: float, queued: bool) -> float:
    d = deadline_s(r, margin)
    if d >= start:
        return d
    return start + margin * (r.ttft_slo_s if queued else r.tpot_slo_s)


def reference_run(
    dev: DeviceView, target: InstanceView, new: RequestView, now: float, config: PolicyConfig
) -> tuple[bool, int]:
    """(ok, iterations) by asking `Arbiter.decide` before every grant."""
    margin, k = config.slo_margin, config.shadow_tokens
    arbiter = Arbiter(config)
    insts: list[InstanceView] = []
    for inst in dev.instances:
        if inst.instance_id == target.instance_id:
            inst = replace(
                inst,
                requests=(*inst.requests, new),
                prefill_ids=inst.prefill_ids | {new.request_id},
            )
        if inst.requests:
            insts.append(inst)
    t = now
    lim: dict[str, float] = {}
    produced: dict[str, int] = {}
    for inst in insts:
        loading = inst.phase is InstancePhase.LOADING
        ready = inst.ready_at_s or now
        new_reqs = []
        for r in inst.requests:
            # The request under test waits from now; those already on a loading instance have
            # waited since they came: both waits are excused.
            since = now if r.request_id == new.request_id else r.arrival_s
            wait = max(ready - since, 0.0) if loading else 0.0
            r = replace(r, excused_s=r.excused_s + wait)
            lim[r.request_id] = _limit(r, t, margin, r.request_id in inst.prefill_ids)
            produced[r.request_id] = 0
            new_reqs.append(r)
        insts[insts.index(inst)] = replace(inst, requests=tuple(new_reqs))
    need = {
        i.instance_id: (k if set(r.request_id for r in i.requests) - i.prefill_ids else k - 1)
        for i in insts
    }
    steps = {i.instance_id: 0 for i in insts}
    done: set[str] = set()
    horizon = float("inf")
    window = k * margin * max(r.tpot_slo_s for i in insts for r in i.requests)
    iterations = 0
    while len(done) < len(insts):
        views = tuple(
            replace(i, phase=InstancePhase.READY, runnable=True)
            if i.phase is InstancePhase.LOADING and (i.ready_at_s or now) <= t
            else i
            for i in insts
        )
        views = tuple(replace(v, runnable=v.phase is InstancePhase.READY) for v in views)
        insts = list(views)
        grant = arbiter.decide(DeviceView("n", dev.kind, "x", 1 << 50, views), t)
        loading = [i.ready_at_s or now for i in insts if i.phase is InstancePhase.LOADING]
        if grant is None:
            t = min(loading)
            continue
        inst = next(i for i in insts if i.instance_id == grant.instance_id)
        if inst.earliest_deadline_s(margin) > horizon and not loading:
            break
        for _ in range(grant.iterations):
            iterations += 1
            queued = [r for r in inst.requests if r.request_id in inst.prefill_ids]
            members = queued or list(inst.requests)
            if queued:
                t += sum(inst.perf.prefill_s(r.input_tokens + r.output_tokens) for r in queued)
            else:
                t += inst.perf.decode_s(inst.context_tokens / inst.batch, inst.batch)
            for r in members:
                if t > lim[r.request_id]:
                    return False, iterations
                lim[r.request_id] += margin * r.tpot_slo_s
            reqs = tuple(
                replace(r, output_tokens=r.output_tokens + 1) if r in members else r
                for r in inst.requests
            )
            if not queued:
                steps[inst.instance_id] += 1
            inst2 = replace(inst, requests=reqs, prefill_ids=frozenset())
            insts[insts.index(inst)] = inst2
            inst = inst2
            if queued and inst.instance_id == target.instance_id:
                horizon = t + window
            if inst.instance_id not in done and steps[inst.instance_id] >= need[inst.instance_id]:
                done.add(inst.instance_id)
                if len(done) == len(insts):
                    break
    return True, iterations


@st.composite
def devices(draw: st.DrawFn) -> tuple[DeviceView, InstanceView, RequestView]:
    kind = draw(st.sampled_from([DeviceKind.CPU, DeviceKind.GPU]))
    n = draw(st.integers(1, 5))
    insts = []
    for i in range(n):
        reqs, queued = [], []
        for j in range(draw(st.integers(0, 3))):
            out = draw(st.integers(0, 30))
            arrival = draw(st.floats(-8.0, 0.0))
            r = req(
                f"i{i}r{j}",
                arrival_s=arrival,
                input_tokens=draw(st.integers(1, 400)),
                output_tokens=out,
                ttft_slo_s=draw(st.sampled_from([0.5, 1.0, 4.0])),
            )
            reqs.append(r)
            if out == 0 and draw(st.booleans()):
                queued.append(r.request_id)
        loading = draw(st.booleans()) and i > 0
        insts.append(instance(
            f"i{i}", tuple(reqs), prefill=tuple(queued),
            perf=flat_perf(draw(st.sampled_from([5.0, 20.0, 60.0])), draw(st.sampled_from([0.2, 1.0]))),  # noqa: E501
            phase=InstancePhase.LOADING if loading else InstancePhase.READY,
            ready_at_s=draw(st.floats(0.0, 2.0)) if loading else None,
        ))  # fmt: skip
    dev = device(*insts, kind=kind)
    target = draw(st.sampled_from(insts))
    new = req(
        "new",
        input_tokens=draw(st.integers(1, 800)),
        ttft_slo_s=draw(st.sampled_from([0.5, 2.0, 8.0])),
    )
    return dev, target, new


@settings(max_examples=300, deadline=None)
@given(devices())
def test_shadow_run_grants_what_the_arbiter_would(case: tuple) -> None:
    dev, target, new = case
    fast = shadow_run(dev, target, (new,), 0.0, CONFIG)
    assert (fast.ok, fast.iterations) == reference_run(dev, target, new, 0.0, CONFIG)


def test_a_second_request_joins_an_instance_still_loading() -> None:
    """The first request came at 0 and waits for a load ending at 4 s; its whole wait is
    excused (as both drivers count it when the load ends), so a second request at 1 s may
    join: both have their first token within their TTFT after the ready time."""
    first = req("first", arrival_s=0.0, input_tokens=50, ttft_slo_s=0.5)
    loading = instance(
        "i0", (first,), prefill=("first",), phase=InstancePhase.LOADING, ready_at_s=4.0,
        perf=flat_perf(decode_ms=10.0, prefill_ms_per_token=0.5),
    )  # fmt: skip
    second = req("second", arrival_s=1.0, input_tokens=50, ttft_slo_s=0.5)
    assert shadow_run(device(loading), loading, (second,), 1.0, CONFIG).ok
    # The first request alone is held to the same rule: not late by the time already waited.
    assert shadow_run(device(loading), loading, (), 1.0, CONFIG).ok
