"""Measure the CPU engine in fp32 and bf16 side by side (docs/ENGINE.md, "dtype").

    python -m slinfer.services.worker.engine.bench_dtype [MODEL_DIR] [--threads N] [--repeats R]

Without MODEL_DIR it builds (or reuses) SmolLM2-135M-Instruct. Prints, per dtype: prefill of
a 128-token prompt, decode step time at batch 1 and 8 (context ~128), and greedy tokens/s of
one request generating 64 tokens. Each figure is the best of R repeats (the machine may be
shared); not part of the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from .base import EngineRequest, SamplingParams
from .torch_config import DTypePolicy, TorchEngineConfig
from .torch_engine import TorchEngine

PROMPT_TOKENS = 128
DECODE_STEPS = 16


def _request(rid: str, prompt: list[int], max_tokens: int) -> EngineRequest:
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    return EngineRequest(rid, tuple(prompt), params)


def _prompt(engine: TorchEngine, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    high = min(engine.vocab_size, 30000)
    return torch.randint(100, high, (PROMPT_TOKENS,), generator=generator).tolist()


def _prefill_s(engine: TorchEngine) -> float:
    engine.add_request(_request("prefill", _prompt(engine, 0), 1))
    result = engine.step()
    return result.duration_s


def _decode_step_s(engine: TorchEngine, batch: int) -> float:
    for i in range(batch):
        engine.add_request(_request(f"d{i}", _prompt(engine, i), DECODE_STEPS + 2))
    engine.step()  # the batched prefill
    times = [engine.step().duration_s for _ in range(DECODE_STEPS)]
    while engine.has_work():
        engine.step()
    return statistics.median(times)


def _tokens_per_s(engine: TorchEngine, prompt: list[int], max_tokens: int) -> float:
    engine.add_request(_request("tps", prompt, max_tokens))
    started, produced = time.perf_counter(), 0
    while engine.has_work():
        produced += sum(len(o.new_token_ids) for o in engine.step().outputs)
    return produced / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir", nargs="?", type=Path)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model_dir = args.model_dir
    if model_dir is None:
        from slinfer.models import build_smollm2

        model_dir = build_smollm2()
    print(f"model {model_dir}, torch threads {args.threads or torch.get_num_threads()}")
    engines = {
        policy: TorchEngine(
            TorchEngineConfig(
                model_dir, kv_capacity_tokens=8192, dtype=policy, num_threads=args.threads
            )
        )
        for policy in (DTypePolicy.FP32, DTypePolicy.BF16)
    }
    chat = engines[DTypePolicy.FP32].encode_chat(
        [{"role": "user", "content": "Tell me about Paris."}]
    )
    best: dict[DTypePolicy, dict[str, float]] = {p: {} for p in engines}
    # Interleave the dtypes repeat by repeat, so that a busy moment on a shared machine
    # does not fall on one of them only; keep the best of each.
    for _ in range(args.repeats):
        for policy, engine in engines.items():
            _prefill_s(engine)  # warm-up
            figures = {
                "prefill128_ms": _prefill_s(engine) * 1e3,
                "decode_b1_ms": _decode_step_s(engine, 1) * 1e3,
                "decode_b8_ms": _decode_step_s(engine, 8) * 1e3,
                "tok_s": -_tokens_per_s(engine, chat, 64),  # negated: min is best
            }
            for name, value in figures.items():
                best[policy][name] = min(best[policy].get(name, value), value)
    print(
        f"{'dtype':6} {'prefill128 ms':>14} {'decode b1 ms':>13} {'decode b8 ms':>13} "
        f"{'greedy tok/s':>13}"
    )
    for policy, row in best.items():
        print(
            f"{policy.value:6} {row['prefill128_ms']:14.1f} {row['decode_b1_ms']:13.1f} "
            f"{row['decode_b8_ms']:13.1f} {-row['tok_s']:13.1f}"
        )
    for engine in engines.values():
        engine.close()


if __name__ == "__main__":
    main()
