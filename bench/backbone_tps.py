"""Tokens/s of SmolLM2 through the gateway vs the same engine called in-process.

    .venv/bin/python -m bench.backbone_tps [--tokens 64] [--json PATH]

Same prompt, greedy, exactly --tokens tokens (ignore_eos), one run each, side by side.
The gateway path is the real one: etcd,
scheduler, worker over loopback gRPC, streaming; the in-process path steps the engine in a
loop. The difference is the serving overhead per token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from slinfer.models import build_smollm2
from slinfer.services.common.etcd_process import start_etcd
from slinfer.services.worker.engine.base import EngineRequest, SamplingParams

PROMPT = "What is the capital of France?"


def in_process(path: str, tokens: int) -> dict[str, float]:
    from pathlib import Path

    from slinfer.services.worker.engine.torch_config import TorchEngineConfig
    from slinfer.services.worker.engine.torch_engine import TorchEngine

    engine = TorchEngine(TorchEngineConfig(model_dir=Path(path), kv_capacity_tokens=4096))
    messages = [{"role": "user", "content": PROMPT}]
    tok = engine.tokenizer  # type: ignore[attr-defined]
    ids = tok.encode(
        tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
        add_special_tokens=False,
    )
    sampling = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    # warm-up (first-call allocations), then the measured run
    engine.add_request(
        EngineRequest("warm", tuple(ids), SamplingParams(temperature=0.0, max_tokens=4))
    )
    while engine.has_work():
        engine.step()
    t0 = time.perf_counter()
    engine.add_request(EngineRequest("r", tuple(ids), sampling))
    first = None
    n = 0
    while engine.has_work():
        res = engine.step()
        for out in res.outputs:
            n += len(out.new_token_ids)
            if first is None and out.new_token_ids:
                first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None
    return {
        "tokens": n,
        "total_s": end - t0,
        "ttft_s": first - t0,
        "decode_tok_s": (n - 1) / (end - first) if n > 1 else 0.0,
        "end_to_end_tok_s": n / (end - t0),
    }


async def through_gateway(path: str, tokens: int) -> dict[str, float]:
    from slinfer.services.inprocess import LiveStack

    etcd = start_etcd()
    try:
        stack = await LiveStack.start(etcd.endpoint)
        try:
            await stack.c.deploy("smollm2", path)
            msgs = [{"role": "user", "content": PROMPT}]
            await stack.c.complete("smollm2", messages=msgs, max_tokens=4, temperature=0)
            t0 = time.perf_counter()
            res = await stack.c.complete(
                "smollm2", messages=msgs, max_tokens=tokens, temperature=0, ignore_eos=True
            )
            end = time.perf_counter()
            c = res.completion
            n = c.completion_tokens
            return {
                "tokens": n,
                "total_s": end - t0,
                "ttft_s": c.ttft_s,
                "decode_tok_s": 1.0 / c.tpot_s if c.tpot_s > 0 else 0.0,
                "end_to_end_tok_s": n / (end - t0),
            }
        finally:
            await stack.stop()
    finally:
        etcd.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--json", default=None)
    ns = parser.parse_args()
    path = str(build_smollm2())
    rows = [
        {"path": "in-process engine", **in_process(path, ns.tokens)},
        {"path": "gateway (etcd + gRPC)", **asyncio.run(through_gateway(path, ns.tokens))},
    ]
    print(f"{'path':<24}{'tokens':>7}{'TTFT s':>9}{'decode tok/s':>14}{'end-to-end tok/s':>18}")
    for r in rows:
        print(
            f"{r['path']:<24}{r['tokens']:>7}{r['ttft_s']:>9.3f}{r['decode_tok_s']:>14.1f}"
            f"{r['end_to_end_tok_s']:>18.1f}"
        )
    ratio = rows[1]["end_to_end_tok_s"] / rows[0]["end_to_end_tok_s"]
    print(f"gateway / in-process (end-to-end tok/s): {ratio:.2f}")
    if ns.json:
        with open(ns.json, "w") as fh:
            json.dump(
                {
                    "bench": "backbone_tps",
                    "command": " ".join(["python -m bench.backbone_tps", *sys.argv[1:]]),
                    "rows": rows,
                },
                fh,
                indent=2,
            )


if __name__ == "__main__":
    main()
