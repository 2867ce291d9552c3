"""Performance model (DESIGN.md §2): interpolation inside and outside the grid, safety."""

from __future__ import annotations

import pytest

from slinfer.policy.errors import InvalidProfile, ProfileNotFound
from slinfer.policy.perf_model import Extrapolation, PerfModel
from slinfer.policy.types import DeviceKind
from slinfer.sim.paths import load_profiles

PREFILL = [[1, 20], [128, 24], [256, 30], [512, 50], [1024, 89], [2048, 169], [4096, 336]]
DECODE = [
    (512, [[1, 14], [2, 14], [4, 15], [8, 17], [16, 20], [32, 26], [64, 39], [128, 59]]),
    (1024, [[1, 14], [2, 14], [4, 15], [8, 18], [16, 22], [32, 30], [64, 47], [96, 67]]),
    (2048, [[1, 14], [2, 15], [4, 17], [8, 22], [16, 28], [32, 40], [48, 56]]),
    (3950, [[1, 15], [2, 16], [4, 19], [8, 28], [16, 38], [24, 49]]),
]  # llama-2-7b on one A100, from the shared profiles


@pytest.fixture
def raw() -> PerfModel:
    return PerfModel.from_tables(PREFILL, DECODE, safety=1.0)


def test_prefill_inside_grid(raw: PerfModel) -> None:
    # 192 lies halfway between 128 (24 ms) and 256 (30 ms).
    assert raw.prefill_ms(192) == pytest.approx(27.0)
    assert raw.prefill_ms(128) == pytest.approx(24.0)


def test_prefill_below_grid_is_clamped(raw: PerfModel) -> None:
    assert raw.prefill_ms(0) == pytest.approx(20.0)


def test_prefill_above_grid_proportional(raw: PerfModel) -> None:
    # Through the origin and the last point: 336 ms * 8192 / 4096.
    assert raw.prefill_ms(8192) == pytest.approx(672.0)


def test_prefill_above_grid_last_segment() -> None:
    model = PerfModel.from_tables(PREFILL, DECODE, mode=Extrapolation.LAST_SEGMENT)
    # Slope of the last segment: (336 - 169) / 2048 per token; 4096 more tokens.
    assert model.prefill_ms(8192) == pytest.approx(336 + 167 * 2)


def test_decode_bilinear_inside_grid(raw: PerfModel) -> None:
    # ctx 768 is halfway 512..1024; batch 6 halfway 4..8.
    # row 512: 15 + (17-15)/2 = 16; row 1024: 15 + (18-15)/2 = 16.5; halfway: 16.25.
    assert raw.decode_ms(768, 6) == pytest.approx(16.25)


def test_decode_on_grid_points(raw: PerfModel) -> None:
    assert raw.decode_ms(2048, 16) == pytest.approx(28.0)


def test_decode_past_batch_grid(raw: PerfModel) -> None:
    assert raw.decode_ms(512, 256) == pytest.approx(59 * 256 / 128)


def test_decode_past_context_grid(raw: PerfModel) -> None:
    assert raw.decode_ms(7900, 1) == pytest.approx(15 * 7900 / 3950)


def test_decode_past_context_grid_last_segment() -> None:
    model = PerfModel.from_tables(PREFILL, DECODE, mode=Extrapolation.LAST_SEGMENT)
    # Between rows 2048 (14 ms) and 3950 (15 ms) at batch 1, extended to 5852.
    assert model.decode_ms(5852, 1) == pytest.approx(16.0)


def test_decode_below_context_grid_uses_first_row(raw: PerfModel) -> None:
    assert raw.decode_ms(100, 8) == pytest.approx(17.0)


def test_safety_factor_and_seconds() -> None:
    model = PerfModel.from_tables(PREFILL, DECODE, safety=1.05)
    assert model.decode_ms(512, 1) == pytest.approx(14 * 1.05)
    assert model.decode_s(512, 1) == pytest.approx(14 * 1.05 / 1000)
    assert model.prefill_s(128) == pytest.approx(24 * 1.05 / 1000)


def test_from_profile_defaults_safety_by_kind() -> None:
    profile = load_profiles()
    gpu = PerfModel.from_profile(profile, "llama-2-7b", DeviceKind.GPU, "gpu")
    cpu = PerfModel.from_profile(profile, "llama-2-7b", DeviceKind.CPU, "cpu")
    assert gpu.safety == pytest.approx(1.05)
    assert cpu.safety == pytest.approx(1.1)
    assert gpu.decode_ms(512, 1) == pytest.approx(14 * 1.05)
    assert cpu.prefill_ms(512) == pytest.approx(285 * 1.1)


def test_missing_profile_is_a_typed_error() -> None:
    with pytest.raises(ProfileNotFound):
        PerfModel.from_profile(load_profiles(), "llama-2-13b", DeviceKind.CPU, "aliyun-8c")


def test_unsorted_table_is_rejected() -> None:
    with pytest.raises(InvalidProfile):
        PerfModel.from_tables([[10, 1], [5, 2]], DECODE)
