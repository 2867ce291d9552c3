"""The quality gate: teacher-forced perplexity over the repo's docs, against fp32."""

from __future__ import annotations

import pytest
import torch

from slinfer.models import is_built, slinfer_home
from slinfer.services.worker.engine.base import EngineKind
from slinfer.services.worker.engine.quality import gate_text, reference, run_gate, windows
from slinfer.services.worker.engine.weight_choice import choose, save_result
from slinfer.services.worker.engine.weight_format import PPL_TOLERANCE, WeightFormat

pytestmark = pytest.mark.openvino
SMOLLM2 = slinfer_home() / "models" / "smollm2-135m-instruct"


def test_gate_text_is_the_repos_own_english() -> None:
    text = gate_text()
    assert "slinfer" in text and len(text) > 20_000
    ids = list(range(1000))
    chunks = list(windows(ids, 256, 600))
    assert [len(c) for c in chunks] == [256, 256, 88]


@pytest.mark.parametrize("engine", [EngineKind.OPENVINO, EngineKind.TORCH])
def test_fp32_candidate_reproduces_the_reference(tiny_models, engine) -> None:
    """The gate's own exactness: fp32 weights, fp32 activations agree with transformers."""
    ref = reference(tiny_models["llama"], window=64, max_tokens=256)
    (r,) = run_gate(
        tiny_models["llama"],
        engine,
        (WeightFormat.FP32,),
        torch.float32,
        window=64,
        max_tokens=256,
        ref_data=ref,
    )
    assert r.tokens == 255 - 3 and r.ppl_ratio == pytest.approx(1.0, abs=1e-3)
    assert r.top1_agreement > 0.99 and r.passed


@pytest.mark.slow
@pytest.mark.skipif(not is_built(SMOLLM2), reason="slinfer models build smollm2")
def test_smollm2_int8_passes_the_gate_on_both_engines(tmp_path) -> None:
    """What auto picks for a measured model passes: SmolLM2 int8 (ppl within 2 %) on both
    engines, with the activation dtype this CPU runs; int4 is measured and, when it fails,
    never chosen."""
    from slinfer.services.worker.engine.torch_config import (
        DTypePolicy,
        read_cpu_flags,
        resolve_dtype,
    )

    dtype = resolve_dtype(DTypePolicy.AUTO, read_cpu_flags())
    ref = reference(SMOLLM2, max_tokens=2048, threads=2)
    for engine in (EngineKind.OPENVINO, EngineKind.TORCH):
        results = run_gate(
            SMOLLM2,
            engine,
            (WeightFormat.INT8, WeightFormat.INT4),
            dtype,
            max_tokens=2048,
            threads=2,
            ref_data=ref,
        )
        for r in results:
            save_result(SMOLLM2, engine, WeightFormat(r.weights), {"passed": r.passed}, tmp_path)
            assert 0.5 < r.top1_agreement <= 1.0
        int8, int4 = results
        assert int8.passed and int8.ppl_ratio <= 1 + PPL_TOLERANCE[WeightFormat.INT8], int8
        chosen = choose(engine, SMOLLM2, tmp_path)
        assert chosen is (WeightFormat.INT4 if int4.passed else WeightFormat.INT8)
