"""A worker measures its own engine's tables, in the shared profiles format."""

from __future__ import annotations

from slinfer.policy import PerfModel
from slinfer.services.worker.engine.torch_config import TorchEngineConfig
from slinfer.services.worker.engine.torch_engine import TorchEngine
from slinfer.services.worker.profiler import ProfileCache, ProfileGrid, measure, profile_key

from .helpers import understate_cached_tables


def test_measure_gives_tables_the_policy_reads(tiny_models, tmp_path) -> None:
    engine = TorchEngine(TorchEngineConfig(model_dir=tiny_models["llama"], kv_capacity_tokens=2048))
    grid = ProfileGrid(
        prefill_tokens=(8, 64, 256), decode_context=(32, 128), decode_batch=(1, 4), repeats=2
    )
    tables = measure(engine, grid, vocab_size=engine.vocab_size)
    assert [n for n, _ in tables["prefill_ms"]] == [8, 64, 256]
    assert all(ms > 0 for _, ms in tables["prefill_ms"])
    assert [c for c, _ in tables["decode_ms"]] == [32, 128]
    assert all([b for b, _ in row] == [1, 4] for _, row in tables["decode_ms"])
    st = engine.stats()
    assert (st.running, st.waiting, st.kv_used_tokens) == (0, 0, 0), "profiling leaked requests"
    perf = PerfModel.from_tables(tables["prefill_ms"], tables["decode_ms"], safety=1.1)
    assert perf.decode_ms(64, 2) > 0 and perf.prefill_ms(100) > 0

    cache = ProfileCache(tmp_path)
    key = profile_key(tiny_models["llama"], "torch", "fp32", 2, "cpu")
    assert cache.get(key) is None
    cache.put(key, tables)
    assert cache.get(key)["prefill_ms"] == tables["prefill_ms"]
    assert profile_key(tiny_models["qwen2"], "torch", "fp32", 2, "cpu") != key


def test_too_small_pool_is_refused(tiny_models) -> None:
    import pytest

    engine = TorchEngine(TorchEngineConfig(model_dir=tiny_models["llama"], kv_capacity_tokens=16))
    with pytest.raises(ValueError, match="too small"):
        measure(
            engine,
            ProfileGrid(prefill_tokens=(64,), decode_context=(64,), decode_batch=(1,)),
            vocab_size=engine.vocab_size,
        )


def test_tables_measured_on_a_busy_machine_are_measured_again(tiny_models, tmp_path) -> None:
    from slinfer.services.worker.calibration import calibrate

    engine = TorchEngine(TorchEngineConfig(model_dir=tiny_models["llama"], kv_capacity_tokens=2048))
    grid = ProfileGrid(prefill_tokens=(8, 64), decode_context=(32,), decode_batch=(1, 2), repeats=1)
    cache = ProfileCache(tmp_path)
    first = calibrate(engine, "m", tiny_models["llama"], "cpu", 1, grid, cache)
    assert not first.cached
    # Tables that do not over-state the cost are reused (pinned faster than any measurement:
    # the first one may itself have run on a busy moment).
    (pinned,) = understate_cached_tables(cache).values()
    again = calibrate(engine, "m", tiny_models["llama"], "cpu", 1, grid, cache)
    assert again.cached and again.tables["prefill_ms"] == pinned["prefill_ms"]
    # Overwrite the cache with tables 1000x too slow, as a loaded machine would measure.
    slow = {
        "prefill_ms": [[n, ms * 1000] for n, ms in first.tables["prefill_ms"]],
        "decode_ms": first.tables["decode_ms"],
    }
    key = next(p.stem for p in tmp_path.glob("*.json"))
    cache.put(key, slow)
    fixed = calibrate(engine, "m", tiny_models["llama"], "cpu", 1, grid, cache)
    assert not fixed.cached, "an over-stated cached table must be measured again"
    assert fixed.tables["prefill_ms"][0][1] < slow["prefill_ms"][0][1] / 10
    # Decode alone over-stated (prefill pinned fast): measured again too.
    slow_decode = {
        "prefill_ms": [[n, ms / 100] for n, ms in fixed.tables["prefill_ms"]],
        "decode_ms": [
            [c, [[b, ms * 1000] for b, ms in row]] for c, row in fixed.tables["decode_ms"]
        ],
    }
    cache.put(key, slow_decode)
    redone = calibrate(engine, "m", tiny_models["llama"], "cpu", 1, grid, cache)
    assert not redone.cached, "a cached table whose decode is over-stated must be measured again"
    assert redone.tables["decode_ms"][0][1][0][1] < slow_decode["decode_ms"][0][1][0][1] / 10
    # The same slow table pinned by an operator (a device modelled on purpose) is used as written.
    cache.put(key, {**slow_decode, "pinned": True})
    kept = calibrate(engine, "m", tiny_models["llama"], "cpu", 1, grid, cache)
    assert kept.cached and kept.tables["decode_ms"] == slow_decode["decode_ms"]
