"""Conversion cache, exported directories, engine and weight-format choice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from slinfer.services.worker.engine import registry
from slinfer.services.worker.engine.base import EngineKind
from slinfer.services.worker.engine.ov_convert import detect_format, is_exported, prepare_ov_model
from slinfer.services.worker.engine.ov_graph import UnsupportedModel, build_model
from slinfer.services.worker.engine.weight_choice import choose, save_result
from slinfer.services.worker.engine.weight_format import WeightFormat

pytestmark = pytest.mark.openvino


def test_conversion_happens_once_per_model_and_format(tiny_models, tmp_path) -> None:
    src = tiny_models["qwen2"]
    seen: list[float] = []
    first = prepare_ov_model(src, WeightFormat.INT8, lambda _s, f: seen.append(f), root=tmp_path)
    assert first.converted and seen and seen[-1] == 1.0 and seen == sorted(seen)
    again = prepare_ov_model(src, WeightFormat.INT8, root=tmp_path)
    assert not again.converted and again.path == first.path
    other = prepare_ov_model(src, WeightFormat.INT4, root=tmp_path)
    assert other.converted and other.path != first.path
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary left"


def test_exported_directory_is_taken_as_is(tiny_models, tmp_path) -> None:
    converted = prepare_ov_model(tiny_models["llama"], WeightFormat.INT4, root=tmp_path).path
    exported = tmp_path / "exported"
    shutil.copytree(converted, exported)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_models["llama"] / name, exported / name)
    assert is_exported(exported) and detect_format(exported) is WeightFormat.INT4
    taken = prepare_ov_model(exported, WeightFormat.AUTO)
    assert taken.path == exported and taken.weights is WeightFormat.INT4 and not taken.converted
    with pytest.raises(ValueError, match="int4"):
        prepare_ov_model(exported, WeightFormat.INT8)


def test_unknown_architectures_are_refused_by_the_converter(tiny_models, tmp_path) -> None:
    model = tmp_path / "odd"
    shutil.copytree(tiny_models["llama"], model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(UnsupportedModel, match="engine=torch"):
        build_model(model, WeightFormat.FP32)
    assert not registry.openvino_supports(model)
    # engine=auto falls back to the PyTorch engine for it; an explicit choice is kept
    assert registry.engine_for("cpu", None, model) is EngineKind.TORCH
    assert registry.engine_for("cpu", EngineKind.OPENVINO, model) is EngineKind.OPENVINO


def test_default_cpu_engine_follows_the_environment(tiny_models, monkeypatch) -> None:
    path = tiny_models["llama"]
    monkeypatch.delenv(registry.CPU_ENGINE_ENV, raising=False)
    assert registry.engine_for("cpu", None, path) is EngineKind.OPENVINO
    assert registry.engine_for("gpu", None, path) is EngineKind.VLLM
    monkeypatch.setenv(registry.CPU_ENGINE_ENV, "torch")
    assert registry.engine_for("cpu", None, path) is EngineKind.TORCH
    monkeypatch.setenv(registry.CPU_ENGINE_ENV, "tensorflow")
    with pytest.raises(ValueError, match="SLINFER_CPU_ENGINE"):
        registry.default_cpu_engine()


def test_auto_weights_take_the_fastest_format_that_passed(tiny_models, tmp_path: Path) -> None:
    model, ov = tiny_models["llama"], EngineKind.OPENVINO
    assert choose(ov, model, tmp_path) is WeightFormat.INT8  # unmeasured: never int4
    save_result(model, ov, WeightFormat.INT4, {"passed": True, "ppl_ratio": 1.05}, tmp_path)
    assert choose(ov, model, tmp_path) is WeightFormat.INT4
    save_result(model, ov, WeightFormat.INT4, {"passed": False, "ppl_ratio": 1.3}, tmp_path)
    assert choose(ov, model, tmp_path) is WeightFormat.INT8
    save_result(model, ov, WeightFormat.INT8, {"passed": False, "ppl_ratio": 1.1}, tmp_path)
    assert choose(ov, model, tmp_path) is WeightFormat.BF16
    # the other engine's record is its own
    assert choose(EngineKind.TORCH, model, tmp_path) is WeightFormat.INT8
    assert choose(EngineKind.VLLM, model, tmp_path) is WeightFormat.AUTO
