"""Time single iterations of the CPU engine: decode at batch 1 and 4, prefill of 64/256 tokens.

    .venv/bin/python -m bench.engine_iter [--threads 2] [--ctx 128] [--repeats 20]
        [--dtype fp32|bf16] [--profile decode1|decode4|prefill64|prefill256] [--json PATH]

Decode: `--batch` requests with `--ctx` prompt tokens each are prefilled, then `--repeats`
decode steps are timed one by one (each step's `duration_s`, the engine's own clock: batch
planning, forward, sampling and detokenisation). Prefill: one prompt of n tokens, timed
`--repeats // 4` times. Medians and the interquartile spread are printed; the machine is
shared, so compare two builds by running this interleaved, several times.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

import torch

from slinfer.services.worker.engine.base import EngineRequest, SamplingParams
from slinfer.services.worker.engine.torch_config import DTypePolicy, TorchEngineConfig
from slinfer.services.worker.engine.torch_engine import TorchEngine

MODEL = Path.home() / ".cache/slinfer/models/smollm2-135m-instruct"


def _prompt(rng: random.Random, n: int) -> tuple[int, ...]:
    return tuple(rng.randrange(100, 40000) for _ in range(n))


def _drain(engine: TorchEngine) -> None:
    while engine.has_work():
        engine.step()


def decode_steps(engine: TorchEngine, batch: int, ctx: int, steps: int) -> list[float]:
    rng = random.Random(0)
    sampling = SamplingParams(temperature=0.0, max_tokens=steps + 1, ignore_eos=True)
    for i in range(batch):
        engine.add_request(EngineRequest(f"d{batch}-{i}", _prompt(rng, ctx), sampling))
    engine.step()  # the prefill of all of them
    times = []
    while engine.has_work():
        result = engine.step()
        times.append(result.duration_s)
    return times


def prefill_steps(engine: TorchEngine, tokens: int, repeats: int) -> list[float]:
    rng = random.Random(1)
    times = []
    for r in range(repeats):
        sampling = SamplingParams(temperature=0.0, max_tokens=1)
        engine.add_request(EngineRequest(f"p{tokens}-{r}", _prompt(rng, tokens), sampling))
        times.append(engine.step().duration_s)
        _drain(engine)
    return times


def summary(times: list[float]) -> dict[str, float]:
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median_ms": q[1] * 1e3, "q1_ms": q[0] * 1e3, "q3_ms": q[2] * 1e3, "n": len(times)}


def run_all(engine: TorchEngine, ctx: int, repeats: int) -> dict[str, dict[str, float]]:
    return {
        "decode_b1": summary(decode_steps(engine, 1, ctx, repeats)),
        "decode_b4": summary(decode_steps(engine, 4, ctx, repeats)),
        "prefill_64": summary(prefill_steps(engine, 64, max(3, repeats // 4))),
        "prefill_256": summary(prefill_steps(engine, 256, max(3, repeats // 4))),
    }


def profile(engine: TorchEngine, what: str, ctx: int, repeats: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        if what.startswith("decode"):
            decode_steps(engine, int(what.removeprefix("decode")), ctx, repeats)
        else:
            prefill_steps(engine, int(what.removeprefix("prefill")), max(3, repeats // 4))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--profile", default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    engine = TorchEngine(
        TorchEngineConfig(
            model_dir=args.model,
            kv_capacity_tokens=8192,
            dtype=DTypePolicy.FP32 if args.dtype == "fp32" else DTypePolicy.BF16,
            num_threads=args.threads,
        )
    )
    prefill_steps(engine, 16, 2)  # warm-up: first calls allocate
    if args.profile:
        profile(engine, args.profile, args.ctx, args.repeats)
        return
    results = run_all(engine, args.ctx, args.repeats)
    for name, s in results.items():
        print(f"{name:12s} median {s['median_ms']:8.1f} ms  IQR {s['q1_ms']:.1f}-{s['q3_ms']:.1f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
