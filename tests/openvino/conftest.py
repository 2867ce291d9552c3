"""Fixtures for the OpenVINO engine tests: engines over the session's tiny models, their
conversions cached in a per-session directory (never the user's)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("openvino_genai", reason="OpenVINO GenAI is not installed")

from slinfer.services.worker.engine.openvino_engine import OpenVinoEngine  # noqa: E402
from slinfer.services.worker.engine.ov_config import OpenVinoEngineConfig  # noqa: E402
from slinfer.services.worker.engine.torch_config import DTypePolicy  # noqa: E402
from slinfer.services.worker.engine.weight_format import WeightFormat  # noqa: E402

OvFactory = Callable[..., OpenVinoEngine]


@pytest.fixture(scope="session")
def ov_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openvino")


@pytest.fixture
def make_ov(tiny_models: dict[str, Path], ov_root: Path) -> Iterator[OvFactory]:
    engines: list[OpenVinoEngine] = []

    def make(
        arch: str = "llama",
        kv_capacity_tokens: int = 4096,
        weights: WeightFormat = WeightFormat.FP32,
        dtype: DTypePolicy = DTypePolicy.FP32,
        **kw,
    ) -> OpenVinoEngine:
        engine = OpenVinoEngine(
            OpenVinoEngineConfig(
                model_dir=kw.pop("model_dir", tiny_models[arch]),
                kv_capacity_tokens=kv_capacity_tokens,
                weights=weights,
                dtype=dtype,
                num_threads=1,
                cache_blobs=False,
                model_root=ov_root,
                **kw,
            )
        )
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()
