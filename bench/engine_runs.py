"""Measurements behind bench/engine.py: one function per engine path, all on one model.

Each returns step times (decode at a batch and context), a 256-token prefill and the cold
start, measured the same way: requests of `context` prompt tokens, prefilled first, then the
median of `steps` pure decode iterations of the whole batch.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from slinfer.services.worker.engine.base import EngineRequest, Phase, SamplingParams
from slinfer.services.worker.engine.weight_format import WeightFormat


@dataclass(frozen=True, slots=True)
class StepTimes:
    step_ms: dict[int, float]  # batch -> median decode step
    prefill_256_ms: float | None
    cold_start_s: float | None
    streamed_bytes: int  # weight bytes a decode step reads


def _prompt(n: int, seed: int) -> tuple[int, ...]:
    rng = np.random.default_rng(seed)
    return tuple(int(t) for t in rng.integers(100, 20000, n))


def read_bandwidth_gbs(threads: int, mb: int = 512, repeats: int = 5) -> float:
    """Best-of read bandwidth: summing a buffer far larger than the caches."""
    torch.set_num_threads(threads)
    buf = torch.ones(mb << 18, dtype=torch.float32)  # mb MiB
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        buf.sum()
        best = min(best, time.perf_counter() - t0)
    return buf.numel() * 4 / best / 1e9


def engine_steps(engine, batches: tuple[int, ...], context: int, steps: int) -> dict[int, float]:
    """Median decode step of `engine` (slinfer's Engine interface) per batch size."""
    out = {}
    for b in batches:
        params = SamplingParams(temperature=0.0, max_tokens=steps + 4, ignore_eos=True)
        for i in range(b):
            engine.add_request(EngineRequest(f"b{b}-{i}", _prompt(context, i), params))
        times = []
        while engine.has_work():
            r = engine.step()
            if r.phase is Phase.DECODE and r.batch_size == b:
                times.append(r.duration_s * 1000)
        out[b] = statistics.median(times[1:] or times)
    return out


def engine_prefill(engine, n: int = 256, repeats: int = 3) -> float:
    best = float("inf")
    for r in range(repeats):
        engine.add_request(
            EngineRequest(f"p{r}", _prompt(n, 100 + r), SamplingParams(temperature=0, max_tokens=1))
        )
        t = engine.step().duration_s * 1000
        while engine.has_work():
            engine.step()
        best = min(best, t)
    return best


def torch_run(
    model: Path, dtype: str, fmt: WeightFormat | None, threads: int, batches, context, steps
) -> StepTimes:
    from slinfer.services.worker.engine.torch_config import DTypePolicy, TorchEngineConfig
    from slinfer.services.worker.engine.torch_engine import TorchEngine

    def make():
        return TorchEngine(
            TorchEngineConfig(model, 8192, DTypePolicy(dtype), num_threads=threads, weights=fmt)
        )

    make().close()  # page cache and imports warm: what a worker's next cold start finds
    t0 = time.perf_counter()
    engine = make()
    cold = time.perf_counter() - t0
    try:
        times = engine_steps(engine, batches, context, steps)
        prefill = engine_prefill(engine)
        streamed = _torch_streamed_bytes(engine)
    finally:
        engine.close()
    return StepTimes(times, prefill, cold, streamed)


def _torch_streamed_bytes(engine) -> int:
    model = engine._model
    embed = model.get_input_embeddings().weight
    total, seen = 0, set()
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) in seen or t is embed:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    head = model.get_output_embeddings()
    if getattr(head, "weight", None) is embed:  # tied and unquantized: the head reads it
        total += embed.numel() * embed.element_size()
    return total


def ov_engine(model: Path, fmt: WeightFormat, threads: int):
    from slinfer.services.worker.engine.openvino_engine import OpenVinoEngine
    from slinfer.services.worker.engine.ov_config import OpenVinoEngineConfig

    return OpenVinoEngine(OpenVinoEngineConfig(model, 8192, fmt, num_threads=threads))


def ov_streamed_bytes(model: Path, fmt: WeightFormat) -> int:
    """The IR's weight bytes minus the embedding table (a decode reads a few rows of it)."""
    import json

    from slinfer.services.worker.engine.ov_convert import prepare_ov_model

    path = prepare_ov_model(model, fmt).path
    total = sum(f.stat().st_size for f in path.glob("*.bin"))
    cfg = json.loads((model / "config.json").read_text())
    rows, cols = cfg["vocab_size"], cfg["hidden_size"]
    per = {WeightFormat.FP32: 4, WeightFormat.BF16: 2}.get(fmt, 1)
    embed = rows * cols * per + (rows * 3 if fmt.quantized else 0)  # + f16 scale, u8 zero
    return total - embed


def ov_standalone(
    model: Path, fmt: WeightFormat, threads: int, batches, context, steps, precision: str
) -> dict[int, float]:
    """The GenAI pipeline alone: add_request + step(), no slinfer code around it."""
    import openvino as ov
    import openvino_genai as ov_genai

    from slinfer.services.worker.engine.ov_convert import prepare_ov_model

    path = prepare_ov_model(model, fmt).path
    sc = ov_genai.SchedulerConfig()
    sc.num_kv_blocks = 8192 // 32
    sc.dynamic_split_fuse = True
    sc.max_num_batched_tokens = 2048
    pipe = ov_genai.ContinuousBatchingPipeline(
        str(path),
        sc,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": precision,
            "KV_CACHE_PRECISION": precision,
            "INFERENCE_NUM_THREADS": threads,
            "sampler_num_threads": 1,
        },
    )
    out, rid = {}, 0
    # Every batch shape runs twice and only the second pass is timed: the first compiles the
    # kernels for its shapes (a worker's long-lived pipeline has them already).
    for b in [x for x in batches for _ in range(2)]:
        gc = ov_genai.GenerationConfig()
        gc.max_new_tokens = steps + 4
        gc.ignore_eos = True
        handles = []
        for i in range(b):
            rid += 1
            ids = ov.Tensor(np.array([_prompt(context, i)], dtype=np.int64))
            handles.append(pipe.add_request(rid, ids, gc))
        times = []
        first = True
        while pipe.has_non_finished_requests():
            t0 = time.perf_counter()
            pipe.step()
            dt = (time.perf_counter() - t0) * 1000
            for h in handles:
                if h.can_read():
                    h.read()
            if not first and pipe.get_metrics().scheduled_requests == b:
                times.append(dt)
            first = False
        out[b] = statistics.median(times[1:] or times)
    del pipe
    return out


def hf_generate_step_ms(model: Path, dtype: str, threads: int, context: int, steps: int) -> float:
    """transformers' generate at batch 1: (time for N+1 tokens - time for 1) / N."""
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    m = AutoModelForCausalLM.from_pretrained(
        model, dtype=torch.bfloat16 if dtype == "bf16" else torch.float32, local_files_only=True
    ).eval()
    ids = torch.tensor([_prompt(context, 0)])
    mask = torch.ones_like(ids)

    def timed(n: int) -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            m.generate(
                ids, attention_mask=mask, do_sample=False, max_new_tokens=n, min_new_tokens=n
            )
        return time.perf_counter() - t0

    timed(2)
    one = min(timed(1) for _ in range(2))
    full = min(timed(steps + 1) for _ in range(2))
    return (full - one) / steps * 1000


async def worker_steps(
    model: Path, fmt: WeightFormat, threads: int, batches, context, steps, etcd_endpoint: str
) -> tuple[dict[int, float], float, float]:
    """The OpenVINO engine inside a live worker, stepped by its arbiter: start-to-start gaps
    of the device loop's iterations at each batch; plus the arbiter's share of the loop, and
    the first request's load time as its completion reported it."""
    from slinfer.services.inprocess import LiveStack

    stack = await LiveStack.start(
        etcd_endpoint,
        workers=[{"node_id": "cpu-0", "memory_bytes": 8 << 30, "num_threads": threads}],
    )
    try:
        await stack.c.deploy(
            "m", str(model), engine="openvino", weights=fmt.value, ttft_slo_s=60.0, tpot_slo_s=5.0
        )
        first = await stack.c.complete("m", "Hello", max_tokens=2, temperature=0)
        load_s = first.completion.load_s
        device = stack.workers[0].device
        out = {}
        for b in batches:
            mark = len(device.iteration_log)
            await asyncio.gather(
                *[
                    stack.c.complete(
                        "m",
                        " ".join(["word"] * context),
                        max_tokens=steps + 4,
                        temperature=0,
                        ignore_eos=True,
                    )
                    for _ in range(b)
                ]
            )
            log = list(device.iteration_log)[mark:]
            starts = [e[0] for e in log if e[3] == "decode" and e[4] == b]
            gaps = [(y - x) * 1000 for x, y in zip(starts, starts[1:], strict=False)]
            out[b] = statistics.median(gaps[1:] or gaps)
        overhead = device.overhead_ratio
    finally:
        await stack.stop()
    return out, overhead, load_s
