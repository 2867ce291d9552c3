"""A faster (or slower) engine must not keep using perf tables measured before the change."""

from __future__ import annotations

from slinfer.services.worker.calibration import calibrate
from slinfer.services.worker.engine import perf_version as versions
from slinfer.services.worker.engine.base import EngineKind
from slinfer.services.worker.profiler import ProfileCache, ProfileGrid, profile_key

GRID = ProfileGrid(prefill_tokens=(8,), decode_context=(16,), decode_batch=(1,), repeats=1)


def test_every_engine_kind_has_a_cost_version() -> None:
    assert {kind.value for kind in EngineKind} <= set(versions.PERF_VERSIONS)
    assert all(versions.perf_version(kind.value) >= 1 for kind in EngineKind)


def test_bumping_the_cost_version_changes_the_key(tiny_models, monkeypatch) -> None:
    before = profile_key(tiny_models["llama"], "torch", "fp32", 1, "cpu")
    assert profile_key(tiny_models["llama"], "torch", "fp32", 1, "cpu") == before
    monkeypatch.setitem(versions.PERF_VERSIONS, "torch", versions.perf_version("torch") + 1)
    assert profile_key(tiny_models["llama"], "torch", "fp32", 1, "cpu") != before


def test_tables_of_an_older_engine_version_are_measured_again(
    make_engine, tiny_models, tmp_path, monkeypatch
) -> None:
    engine = make_engine("llama", kv_capacity_tokens=256)
    cache = ProfileCache(tmp_path)
    first = calibrate(engine, "m", tiny_models["llama"], "cpu", 1, GRID, cache)
    again = calibrate(engine, "m", tiny_models["llama"], "cpu", 1, GRID, cache)
    assert not first.cached and again.cached
    # The engine got a new cost version: the tables on disk belong to the old one.
    monkeypatch.setitem(versions.PERF_VERSIONS, "torch", versions.perf_version("torch") + 1)
    bumped = calibrate(engine, "m", tiny_models["llama"], "cpu", 1, GRID, cache)
    assert not bumped.cached, "tables measured by an older engine version were reused"
    assert len(list(tmp_path.glob("*.json"))) == 2  # one table per version
