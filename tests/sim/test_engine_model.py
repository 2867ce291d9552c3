"""Grant execution in the engine model: hand-computed iteration times and token effects."""

from __future__ import annotations

import pytest

from slinfer.policy.kv_scaling import OutputHistory
from slinfer.policy.types import DeviceKind
from slinfer.sim.engine_model import EngineModel
from slinfer.sim.state import SimInstance, SimNode, SimRequest
from tests.policy.factories import flat_perf, spec


def _instance(*requests: SimRequest, prefill: tuple[SimRequest, ...] = ()) -> SimInstance:
    node = SimNode("gpu0", DeviceKind.GPU, "gpu", 80 << 30, 4)
    perf = flat_perf(decode_ms=50.0, prefill_ms_per_token=1.0)
    inst = SimInstance("i", "m0", node, spec(), perf, perf, OutputHistory(), 0.25, 0.0)
    inst.requests.extend(requests)
    inst.prefill.extend(prefill)
    return inst


def _req(index: int, target: int, out: int = 0, input_tokens: int = 100) -> SimRequest:
    r = SimRequest(index, "m0", 0.0, input_tokens, target, ttft_slo_s=1.0, tpot_slo_s=0.25)
    r.output_tokens = out
    return r


def test_decode_grant_tokens_and_finish_times() -> None:
    short, long = _req(0, target=3, out=2), _req(1, target=10, out=2)
    plan = EngineModel().plan(_instance(short, long), iterations=2, now=5.0)
    assert plan.end_s == pytest.approx(5.1)  # two 50 ms decode iterations
    by_id = {e.request.index: e for e in plan.effects}
    assert (by_id[0].tokens, by_id[0].finish_s) == (1, pytest.approx(5.05))
    assert (by_id[1].tokens, by_id[1].finish_s) == (2, None)
    assert plan.decode_tokens == 3  # batch 2, then batch 1
    # deadlines of tokens 3 and 4 of `long`: 1 + 0.25·2 and 1 + 0.25·3; both ~3.9 s late.
    assert by_id[1].lateness_s == pytest.approx(5.05 - 1.5)


def test_prefill_iteration_only_prefills() -> None:
    old, new = _req(0, target=10, out=4), _req(1, target=5, input_tokens=300)
    plan = EngineModel().plan(_instance(old, new, prefill=(new,)), iterations=1, now=0.0)
    assert plan.end_s == pytest.approx(0.3)  # 1 ms per prompt token
    (effect,) = plan.effects
    assert effect.request is new and effect.prefilled and effect.first_token_s == pytest.approx(0.3)
    assert effect.lateness_s == pytest.approx(0.3 - 1.0)


def test_recompute_prefills_prompt_and_tokens_so_far() -> None:
    back = _req(0, target=10, out=50, input_tokens=100)
    plan = EngineModel().plan(_instance(back, prefill=(back,)), iterations=1, now=0.0)
    assert plan.end_s == pytest.approx(0.150)


def test_noise_is_mean_one_and_seeded() -> None:
    r = _req(0, target=10**6)
    a = [EngineModel(seed=3, noise_cv=0.3).plan(_instance(r), 1, 0.0).end_s for _ in range(1)]
    b = [EngineModel(seed=3, noise_cv=0.3).plan(_instance(r), 1, 0.0).end_s for _ in range(1)]
    assert a == b
    model = EngineModel(seed=1, noise_cv=0.3)
    mean = sum(model.plan(_instance(r), 1, 0.0).end_s for _ in range(4000)) / 4000
    assert mean == pytest.approx(0.050, rel=0.03)
