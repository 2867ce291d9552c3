"""Interleaved A/B of the CPU engine's iterations: a git revision's engine vs the working tree's.

    .venv/bin/python -m bench.engine_ab --base REV [--threads 1] [--rounds 15] [--ctx 128]

Both engines live in one process and take turns, step by step (decode at batch 1 and 4) or
prompt by prompt (prefill of 64 and 256 tokens), so both see the same machine load; on a
shared machine that is the only comparison worth making. The base revision's
services/worker/engine/ is extracted with `git archive` into a temporary package (its
attention registered under another name, since transformers' registry is global).
Prints, per case, the median step time of each side, the median of the per-round ratios
new/base and their interquartile range.
"""

from __future__ import annotations

import argparse
import importlib
import io
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

from bench.engine_iter import MODEL
from slinfer.services.worker.engine.base import EngineRequest, SamplingParams

ENGINE_DIR = "services/worker/engine"


def load_base(rev: str, root: Path):
    """The engine package of `rev`, importable as `slinfer_base_engine`."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", rev, ENGINE_DIR], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    package = root / "slinfer_base_engine"
    (root / ENGINE_DIR).rename(package)
    attention = package / "paged_attention.py"
    text = attention.read_text().replace('"slinfer_paged"', '"slinfer_paged_base"')
    attention.write_text(text)
    sys.path.insert(0, str(root))
    return importlib.import_module("slinfer_base_engine.torch_engine"), importlib.import_module(
        "slinfer_base_engine.torch_config"
    )


def make(module, config_module, threads: int):
    config = config_module.TorchEngineConfig(
        model_dir=MODEL,
        kv_capacity_tokens=8192,
        dtype=config_module.DTypePolicy.FP32,
        num_threads=threads,
    )
    return module.TorchEngine(config)


def prompt(rng: random.Random, n: int) -> tuple[int, ...]:
    return tuple(rng.randrange(100, 40000) for _ in range(n))


def decode_pair(engines, batch: int, ctx: int, rounds: int) -> list[tuple[float, float]]:
    for name, engine in engines.items():
        rng = random.Random(0)
        sampling = SamplingParams(temperature=0.0, max_tokens=rounds + 1, ignore_eos=True)
        for i in range(batch):
            engine.add_request(EngineRequest(f"{name}-{i}", prompt(rng, ctx), sampling))
        engine.step()
    pairs = []
    for _ in range(rounds):
        base = engines["base"].step().duration_s
        new = engines["new"].step().duration_s
        pairs.append((base, new))
    return pairs


def prefill_pair(engines, tokens: int, rounds: int) -> list[tuple[float, float]]:
    pairs = []
    for r in range(rounds):
        times = []
        for name in ("base", "new"):
            engine = engines[name]
            ids = prompt(random.Random(r), tokens)
            sampling = SamplingParams(temperature=0.0, max_tokens=1)
            engine.add_request(EngineRequest(f"p{tokens}-{r}", ids, sampling))
            times.append(engine.step().duration_s)
            while engine.has_work():
                engine.step()
        pairs.append((times[0], times[1]))
    return pairs


def report(name: str, pairs: list[tuple[float, float]]) -> None:
    base = statistics.median(b for b, _ in pairs) * 1e3
    new = statistics.median(n for _, n in pairs) * 1e3
    ratios = [n / b for b, n in pairs]
    q1, med, q3 = statistics.quantiles(ratios, n=4)
    print(
        f"{name:12s} base {base:7.1f} ms  new {new:7.1f} ms  "
        f"new/base {med:.3f} (IQR {q1:.3f}-{q3:.3f}, n={len(pairs)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision of the base engine")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--ctx", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from slinfer.services.worker.engine import torch_config, torch_engine

    with tempfile.TemporaryDirectory() as tmp:
        base_engine, base_config = load_base(args.base, Path(tmp))
        engines = {
            "base": make(base_engine, base_config, args.threads),
            "new": make(torch_engine, torch_config, args.threads),
        }
        prefill_pair(engines, 16, 2)  # warm-up
        report("decode_b1", decode_pair(engines, 1, args.ctx, args.rounds * 2))
        report("decode_b4", decode_pair(engines, 4, args.ctx, args.rounds * 2))
        report("prefill_64", prefill_pair(engines, 64, args.rounds))
        report("prefill_256", prefill_pair(engines, 256, max(4, args.rounds // 2)))


if __name__ == "__main__":
    main()
