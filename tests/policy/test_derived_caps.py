"""Concurrency caps of the ServerlessLLM baselines for a model the profiles do not list."""

import pytest

from slinfer.policy.baselines import derived_caps
from slinfer.policy.perf_model import PerfModel


def _perf(ms_per_request: float, base_ms: float = 100.0) -> PerfModel:
    rows = [[b, base_ms + ms_per_request * b] for b in (1, 2, 4, 8, 16, 32)]
    return PerfModel.from_tables([[16, 50.0], [256, 400.0]], [[64, rows], [1024, rows]], 1.0)


def test_exclusive_cap_is_the_largest_batch_meeting_tpot() -> None:
    caps = derived_caps(_perf(10.0), tpot_slo_s=0.25)  # 100 + 10 b <= 250 -> b = 15
    assert caps.exclusive == 15
    assert caps.shared2 == 2  # 100 + 10 b <= 125 -> b = 2


def test_cap_is_at_least_one_even_when_no_batch_meets_the_slo() -> None:
    caps = derived_caps(_perf(10.0, base_ms=500.0), tpot_slo_s=0.25)
    assert caps.exclusive == 1 and caps.shared2 == 1


def test_safety_factor_tightens_the_cap() -> None:
    loose = derived_caps(_perf(10.0), tpot_slo_s=0.25)
    tight = derived_caps(_perf(10.0).with_safety(1.2), tpot_slo_s=0.25)
    assert tight.exclusive < loose.exclusive


def test_rejects_nonpositive_slo() -> None:
    with pytest.raises(ValueError):
        derived_caps(_perf(10.0), tpot_slo_s=0.0)
