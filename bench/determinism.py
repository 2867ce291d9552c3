"""The cost of batch-invariant decoding (`deterministic`), in the CPU engine, side by side.

    python -m bench.determinism [--model-dir DIR] [--batches 1 4 8] [--tokens 64] [--json OUT]

For each batch size B, B greedy requests decode `--tokens` tokens together, once shared (one
forward pass per iteration, the default) and once deterministic (each request in a forward
pass of its own): decode tokens/s and the ratio. Then the resume cost: a request resumed
with R tokens is recomputed by one prefill (default) or by a prefill of the prompt and R
single-token replays (deterministic): time to its next token, and the ratio. Model: SmolLM2
(default), one engine thread, the CPU's default dtype.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.chaos import _cpu, _smollm2
from slinfer.services.worker.engine.base import EngineRequest, SamplingParams
from slinfer.services.worker.engine.torch_config import TorchEngineConfig, cpu_dtype_from_env
from slinfer.services.worker.engine.torch_engine import TorchEngine

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def _params(n: int, deterministic: bool) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True,
                          deterministic=deterministic)  # fmt: skip


def decode_rate(engine: TorchEngine, prompt: list[int], batch: int, n: int, det: bool) -> float:
    """Decode tokens/s of `batch` requests (their prefills excluded)."""
    for i in range(batch):
        engine.add_request(EngineRequest(f"r{i}", tuple(prompt), _params(n, det)))
    while engine.stats().waiting:
        engine.step()  # prefills
    t0, tokens = time.perf_counter(), 0
    while engine.has_work():
        tokens += sum(len(o.new_token_ids) for o in engine.step().outputs)
    return tokens / (time.perf_counter() - t0)


def resume_s(engine: TorchEngine, prompt: list[int], resumed: list[int], det: bool) -> float:
    """Seconds from admitting a resumed request to its next token."""
    engine.add_request(
        EngineRequest("resumed", tuple(prompt), _params(len(resumed) + 1, det), tuple(resumed))
    )
    t0 = time.perf_counter()
    while engine.has_work():
        if any(o.new_token_ids for o in engine.step().outputs):
            break
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.determinism", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--resumed", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    model_dir = args.model_dir or _smollm2()
    engine = TorchEngine(TorchEngineConfig(model_dir, kv_capacity_tokens=8192,
                                           dtype=cpu_dtype_from_env(), num_threads=1))  # fmt: skip
    prompt = engine.encode(PROMPT)
    decode_rate(engine, prompt, 2, 8, False)  # warm-up
    rows, resumes = [], []
    print(f"decode tokens/s, {len(prompt)}-token prompts, {args.tokens} tokens each")
    print(f"{'batch':>6}{'shared':>10}{'determ.':>10}{'ratio':>8}")
    for b in args.batches:
        shared = decode_rate(engine, prompt, b, args.tokens, False)
        det = decode_rate(engine, prompt, b, args.tokens, True)
        rows.append({"batch": b, "shared_tok_s": round(shared, 1), "det_tok_s": round(det, 1),
                     "ratio": round(det / shared, 3)})  # fmt: skip
        print(f"{b:>6}{shared:>10.1f}{det:>10.1f}{det / shared:>8.2f}")
    ref = engine.encode(" and so the keeper climbed the stairs again" * 20)
    print("time to the next token after a resume with R tokens (s)")
    print(f"{'R':>6}{'prefill':>10}{'replay':>10}{'ratio':>8}")
    for r in args.resumed:
        plain = resume_s(engine, prompt, ref[:r], False)
        replay = resume_s(engine, prompt, ref[:r], True)
        resumes.append({"resumed": r, "prefill_s": round(plain, 3), "replay_s": round(replay, 3),
                        "ratio": round(replay / plain, 2)})  # fmt: skip
        print(f"{r:>6}{plain:>10.3f}{replay:>10.3f}{replay / plain:>8.1f}")
    report = {"model": str(model_dir), "cpu": _cpu(), "dtype": str(engine.dtype),
              "decode": rows, "resume": resumes}  # fmt: skip
    print(f"{report['cpu']}, {report['dtype']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    engine.close()


if __name__ == "__main__":
    main()
