"""The quality gate of a weight format: teacher-forced perplexity over the project's own docs.

Text: the English the repository ships (README.md and docs/*.md), tokenised with the model's
tokenizer and cut into windows of `window` tokens. Each window is run teacher-forced (one
forward pass over the whole window, every position's next-token distribution kept) through:

- the reference: transformers' model in fp32 with its fp32 weights;
- the candidate: the engine's own computation with the format's weights and the engine's
  activation dtype — for the PyTorch engine, the HF model with `quant_linear` applied; for the
  OpenVINO engine, the converted model compiled by OpenVINO (the same IR and CPU kernels the
  pipeline runs; only the attention differs, SDPA instead of paged).

Reported: perplexity of both, their ratio, and top-1 agreement (the share of positions where
the candidate's most likely token is the reference's). A format passes when its perplexity is
at most `PPL_TOLERANCE[format]` above fp32's. Random-weight models give meaningless
perplexities; the gate is for real checkpoints (SmolLM2 in the tests and the bench).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from slinfer.services.worker.engine.base import EngineKind
from slinfer.services.worker.engine.weight_format import PPL_TOLERANCE, WeightFormat

REPO = Path(__file__).resolve().parents[3]
LogitsFn = Callable[[list[int]], np.ndarray]  # window ids -> [len, vocab] logits (f32)


@dataclass(frozen=True, slots=True)
class GateResult:
    engine: str
    weights: str
    dtype: str
    tokens: int
    ppl: float
    ref_ppl: float
    ppl_ratio: float
    top1_agreement: float
    passed: bool
    seconds: float


def gate_text(root: Path = REPO) -> str:
    files = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    return "\n\n".join(f.read_text() for f in files if f.is_file())


def windows(ids: list[int], window: int, max_tokens: int) -> Iterator[list[int]]:
    ids = ids[:max_tokens]
    for start in range(0, len(ids) - 1, window):
        chunk = ids[start : start + window]
        if len(chunk) >= 2:
            yield chunk


def _nll_and_top1(logits: np.ndarray, ids: list[int]) -> tuple[float, np.ndarray]:
    x = torch.from_numpy(np.ascontiguousarray(logits[:-1])).float()
    target = torch.tensor(ids[1:])
    nll = torch.nn.functional.cross_entropy(x, target, reduction="sum").item()
    return nll, x.argmax(-1).numpy()


def hf_logits(model_dir: Path, dtype: torch.dtype, fmt: WeightFormat | None) -> LogitsFn:
    from transformers import AutoModelForCausalLM

    from slinfer.services.worker.engine.quant_linear import apply_weight_format

    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=dtype, local_files_only=True
    ).eval()
    if fmt is not None:
        apply_weight_format(model, fmt, dtype)

    def run(ids: list[int]) -> np.ndarray:
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
        return out.float().numpy()

    return run


def ov_logits(model_dir: Path, fmt: WeightFormat, precision: str, threads: int | None) -> LogitsFn:
    import openvino as ov

    from slinfer.services.worker.engine.ov_convert import OV_MODEL_FILE, prepare_ov_model

    converted = prepare_ov_model(model_dir, fmt)
    props: dict[str, object] = {"INFERENCE_PRECISION_HINT": precision}
    if threads:
        props["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(converted.path / OV_MODEL_FILE), "CPU", props)
    request = compiled.create_infer_request()

    def run(ids: list[int]) -> np.ndarray:
        request.reset_state()
        n = len(ids)
        out = request.infer(
            {
                "input_ids": np.array([ids], np.int64),
                "attention_mask": np.ones((1, n), np.int64),
                "position_ids": np.arange(n, dtype=np.int64)[None],
                "beam_idx": np.zeros(1, np.int32),
            }
        )
        return np.array(out["logits"][0], dtype=np.float32)

    return run


@dataclass(frozen=True, slots=True)
class Reference:
    """The gate text's windows and transformers' fp32 results on them (computed once)."""

    chunks: list[list[int]]
    results: list[tuple[float, np.ndarray]]  # (nll sum, top-1 ids) per window


def reference(
    model_dir: Path, window: int = 512, max_tokens: int = 8192, threads: int | None = None
) -> Reference:
    from transformers import AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    chunks = list(windows(tok(gate_text()).input_ids, window, max_tokens))
    fp32 = hf_logits(model_dir, torch.float32, None)
    return Reference(chunks, [_nll_and_top1(fp32(c), c) for c in chunks])


def run_gate(
    model_dir: Path,
    engine: EngineKind,
    formats: tuple[WeightFormat, ...],
    dtype: torch.dtype,
    window: int = 512,
    max_tokens: int = 8192,
    threads: int | None = None,
    ref_data: Reference | None = None,
) -> list[GateResult]:
    """Measure each format of `engine` against transformers' fp32 model."""
    data = ref_data or reference(model_dir, window, max_tokens, threads)
    if threads:
        torch.set_num_threads(threads)
    chunks, ref = data.chunks, data.results
    count = sum(len(c) - 1 for c in chunks)
    ref_ppl = math.exp(sum(n for n, _ in ref) / count)
    precision = "bf16" if dtype == torch.bfloat16 else "f32"
    results = []
    for fmt in formats:
        t0 = time.perf_counter()
        if engine is EngineKind.OPENVINO:
            candidate = ov_logits(model_dir, fmt, precision, threads)
        else:
            candidate = hf_logits(model_dir, dtype, fmt)
        nll, agree = 0.0, 0
        for chunk, (_, ref_top) in zip(chunks, ref, strict=True):
            n, top = _nll_and_top1(candidate(chunk), chunk)
            nll += n
            agree += int((top == ref_top).sum())
        del candidate
        ppl = math.exp(nll / count)
        ratio = ppl / ref_ppl
        results.append(
            GateResult(
                engine=engine.value,
                weights=fmt.value,
                dtype=precision,
                tokens=count,
                ppl=ppl,
                ref_ppl=ref_ppl,
                ppl_ratio=ratio,
                top1_agreement=agree / count,
                passed=ratio <= 1.0 + PPL_TOLERANCE[fmt],
                seconds=time.perf_counter() - t0,
            )
        )
    return results


def as_record(result: GateResult) -> dict[str, object]:
    return asdict(result)
