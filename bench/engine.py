"""CPU engines side by side, one run: step times against the memory floor, prefill, cold start.

    python -m bench.engine [--model DIR] [--threads 2] [--batches 1,8] [--context 128]
                           [--steps 16] [--quality quality.json] [--json out.json] [--quick]

Rows {engine, weights, batch, context, step_ms, floor_ms, floor_ratio, tokens_per_s,
prefill_256_ms, cold_start_s, ppl_ratio, top1_agreement} for

- `torch`: slinfer's PyTorch engine (activation dtype fp32 and bf16, and int8 weights);
- `openvino`: the OpenVINO engine inside a live worker, stepped by its arbiter (step time =
  start-to-start gap of the device loop's iterations, so the arbiter and the executor hop
  are in it);
- `openvino-standalone`: GenAI's ContinuousBatchingPipeline alone (add_request + step());
- `hf-generate`: transformers' generate at batch 1.

floor_ms = weight bytes a decode step reads ÷ the read bandwidth measured in the same run;
ppl_ratio / top1_agreement come from `python -m bench.quality --json` (the quality gate).
Run the final measurement alone: `flock /tmp/slinfer-bench.lock python -m bench.engine ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

from bench import engine_runs as runs
from slinfer.services.worker.engine.weight_format import WeightFormat


def _cpu() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if "Model name" in ln), "")
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[-1].split("\n", 1)[0].split()
    isa = sorted(f for f in flags if f.startswith(("avx512", "amx")))
    return f"{name} ({' '.join(isa) or 'no AVX-512'})"


def _quality(path: Path | None) -> dict[tuple[str, str], dict[str, Any]]:
    if path is None or not path.is_file():
        return {}
    rows = json.loads(path.read_text())["rows"]
    return {(r["engine"], r["weights"]): r for r in rows}


def main(argv: list[str] | None = None) -> None:
    from slinfer.models import slinfer_home

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=slinfer_home() / "models/smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--quality", type=Path, default=None, help="bench.quality --json output")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="fewer configurations (smoke run)")
    args = ap.parse_args(argv)
    batches = tuple(int(b) for b in args.batches.split(","))
    common = (args.threads, batches, args.context, args.steps)
    bandwidth = runs.read_bandwidth_gbs(args.threads)
    quality = _quality(args.quality)
    rows: list[dict[str, Any]] = []

    def add(
        engine: str,
        weights: str,
        times: dict[int, float],
        streamed: int,
        prefill: float | None,
        cold: float | None,
    ) -> None:
        floor = streamed / (bandwidth * 1e9) * 1000 if streamed else None
        q = quality.get((engine.split("-")[0], weights), {})
        for b, ms in times.items():
            rows.append(
                {
                    "engine": engine,
                    "weights": weights,
                    "batch": b,
                    "context": args.context,
                    "step_ms": round(ms, 2),
                    "floor_ms": round(floor, 2) if floor else None,
                    "floor_ratio": round(ms / floor, 2) if floor else None,
                    "tokens_per_s": round(b * 1000 / ms, 1),
                    "prefill_256_ms": round(prefill, 1) if prefill is not None else None,
                    "cold_start_s": round(cold, 3) if cold is not None else None,
                    "ppl_ratio": q.get("ppl_ratio"),
                    "top1_agreement": q.get("top1_agreement"),
                }
            )
            print(json.dumps(rows[-1]), flush=True)

    torch_cfgs = [("fp32", None), ("bf16", None), ("bf16", WeightFormat.INT8)]
    ov_formats = [WeightFormat.INT8, WeightFormat.INT4, WeightFormat.BF16, WeightFormat.FP32]
    if args.quick:
        torch_cfgs, ov_formats = [("bf16", None)], [WeightFormat.INT8]
    streamed_by_dtype: dict[str, int] = {}
    for dtype, fmt in torch_cfgs:
        t = runs.torch_run(args.model, dtype, fmt, *common)
        if fmt is None:
            streamed_by_dtype[dtype] = t.streamed_bytes
        add(
            "torch",
            (fmt.value if fmt else dtype),
            t.step_ms,
            t.streamed_bytes,
            t.prefill_256_ms,
            t.cold_start_s,
        )
    from slinfer.services.worker.engine.ov_config import OpenVinoEngineConfig

    precision = OpenVinoEngineConfig(args.model, 0).precision
    for fmt in ov_formats:
        streamed = runs.ov_streamed_bytes(args.model, fmt)  # converts once if needed
        runs.ov_engine(args.model, fmt, args.threads).close()  # warm: libraries, page cache
        import time

        t0 = time.perf_counter()
        engine = runs.ov_engine(args.model, fmt, args.threads)
        cold = time.perf_counter() - t0
        prefill = runs.engine_prefill(engine)
        engine.close()
        alone = runs.ov_standalone(args.model, fmt, *common, precision=precision)
        add("openvino-standalone", fmt.value, alone, streamed, None, None)
        if fmt in (WeightFormat.INT8, WeightFormat.INT4):
            from slinfer.services.common.etcd_process import start_etcd

            etcd = start_etcd()
            try:
                inside, overhead, load_s = asyncio.run(
                    runs.worker_steps(args.model, fmt, *common, etcd.endpoint)
                )
            finally:
                etcd.stop()
            add("openvino", fmt.value, inside, streamed, prefill, cold)
            rows[-1]["arbiter_overhead"] = round(overhead, 4)
            rows[-1]["first_request_load_s"] = round(load_s, 3)
    for dtype in ("bf16", "fp32") if not args.quick else ("bf16",):
        ms = runs.hf_generate_step_ms(args.model, dtype, args.threads, args.context, args.steps)
        # the same weights as the PyTorch engine's rows of that dtype stream per token
        add("hf-generate", dtype, {1: ms}, streamed_by_dtype.get(dtype, 0), None, None)
    report = {
        "cpu": _cpu(),
        "threads": args.threads,
        "read_bandwidth_gbs": round(bandwidth, 1),
        "model": str(args.model),
        "rows": rows,
        "checks": _checks(rows),
    }
    print(json.dumps(report["checks"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


def _checks(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's done-when ratios, from this run's rows."""

    def step(engine: str, weights: str | tuple[str, ...], batch: int) -> float | None:
        wanted = (weights,) if isinstance(weights, str) else weights
        ms = [
            r["step_ms"]
            for r in rows
            if r["engine"] == engine and r["batch"] == batch and r["weights"] in wanted
        ]
        return min(ms) if ms else None

    out: dict[str, Any] = {}
    for w in ("int8", "int4"):
        worker1, alone1 = step("openvino", w, 1), step("openvino-standalone", w, 1)
        # the PyTorch engine's best *dtype* (unquantized weights), as the issue compares
        torch1, torch8 = step("torch", ("fp32", "bf16"), 1), step("torch", ("fp32", "bf16"), 8)
        worker8 = step("openvino", w, 8)
        if worker1 and alone1:
            out[f"{w}: worker/standalone b1 (<= 1.15)"] = round(worker1 / alone1, 3)
        if worker1 and torch1:
            out[f"{w}: torch best / worker b1 (>= 2.5)"] = round(torch1 / worker1, 2)
        if worker8 and torch8:
            out[f"{w}: worker tok/s / torch best tok/s b8 (>= 3)"] = round(torch8 / worker8, 2)
    return out


if __name__ == "__main__":
    main()
