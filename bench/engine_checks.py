"""The issue-15 ratios, interleaved: every configuration measured in every round, in turn.

    python -m bench.engine_checks [--model DIR] [--rounds 5] [--steps 12] [--threads 2]
                                  [--weights int8] [--json out.json]

On a machine shared with other jobs, step times drift by multiples within minutes, so
`bench/engine.py`'s rows (each configuration measured once, one after the other) give noisy
ratios. Here one process holds every configuration at once and alternates them round by round
(as `bench/engine_ab.py` does for two engine revisions): the PyTorch engine in fp32 and in bf16
(its dtypes), the OpenVINO pipeline alone, and the OpenVINO engine inside a live worker stepped
by its arbiter. Each round measures, per configuration, the median decode step at batch 1 and
batch 8 (context 128). Reported per configuration: the median and the minimum over rounds
(interference only ever adds time, so the minimum is the best estimate of an engine's own
cost), and per round the three ratios of the issue's done-when, summarised by their median
and range.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from pathlib import Path
from typing import Any

from bench import engine_runs as runs
from slinfer.services.worker.engine.weight_format import WeightFormat


class _Worker:
    """A live stack with one OpenVINO instance; decode steps timed by the device loop."""

    def __init__(self, model: Path, fmt: WeightFormat, threads: int):
        self.model, self.fmt, self.threads = model, fmt, threads

    async def start(self) -> None:
        from slinfer.services.common.etcd_process import start_etcd
        from slinfer.services.inprocess import LiveStack

        self.etcd = start_etcd()
        self.stack = await LiveStack.start(
            self.etcd.endpoint,
            workers=[{"node_id": "cpu-0", "memory_bytes": 8 << 30, "num_threads": self.threads}],
        )
        await self.stack.c.deploy(
            "m",
            str(self.model),
            engine="openvino",
            weights=self.fmt.value,
            ttft_slo_s=60.0,
            tpot_slo_s=5.0,
        )
        await self.stack.c.complete("m", "Hello", max_tokens=2, temperature=0)

    async def steps(self, batch: int, context: int, steps: int) -> float:
        device = self.stack.workers[0].device
        mark = len(device.iteration_log)
        prompt = " ".join(["word"] * context)
        await asyncio.gather(
            *[
                self.stack.c.complete(
                    "m", prompt, max_tokens=steps + 4, temperature=0, ignore_eos=True
                )
                for _ in range(batch)
            ]
        )
        starts = [
            e[0] for e in list(device.iteration_log)[mark:] if e[3] == "decode" and e[4] == batch
        ]
        gaps = [(y - x) * 1000 for x, y in zip(starts, starts[1:], strict=False)]
        return statistics.median(gaps[1:] or gaps)

    async def stop(self) -> None:
        overhead = self.stack.workers[0].device.overhead_ratio
        await self.stack.stop()
        self.etcd.stop()
        self.overhead = overhead


def main(argv: list[str] | None = None) -> None:
    from slinfer.models import slinfer_home
    from slinfer.services.worker.engine.ov_config import OpenVinoEngineConfig
    from slinfer.services.worker.engine.torch_config import DTypePolicy, TorchEngineConfig
    from slinfer.services.worker.engine.torch_engine import TorchEngine

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=slinfer_home() / "models/smollm2-135m-instruct")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--weights", default="int8")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    fmt = WeightFormat(args.weights)
    precision = OpenVinoEngineConfig(args.model, 0).precision
    torch_engines = {
        dtype: TorchEngine(
            TorchEngineConfig(args.model, 8192, DTypePolicy(dtype), num_threads=args.threads)
        )
        for dtype in ("fp32", "bf16")
    }
    worker = _Worker(args.model, fmt, args.threads)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(worker.start())
    times: dict[str, dict[int, list[float]]] = {}

    def record(name: str, per_batch: dict[int, float]) -> None:
        for b, ms in per_batch.items():
            times.setdefault(name, {}).setdefault(b, []).append(ms)
        print(name, {b: round(v, 2) for b, v in per_batch.items()}, flush=True)

    batches, common = (1, 8), (args.context, args.steps)
    try:
        for r in range(args.rounds):
            print(f"round {r}", flush=True)
            for dtype, engine in torch_engines.items():
                record(f"torch-{dtype}", runs.engine_steps(engine, batches, *common))
            record(
                "openvino-standalone",
                runs.ov_standalone(
                    args.model, fmt, args.threads, batches, *common, precision=precision
                ),
            )
            record(
                "openvino", {b: loop.run_until_complete(worker.steps(b, *common)) for b in batches}
            )
    finally:
        loop.run_until_complete(worker.stop())
        for engine in torch_engines.values():
            engine.close()
    report = _report(times, args.rounds, worker.overhead)
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


def _report(
    times: dict[str, dict[int, list[float]]], rounds: int, overhead: float
) -> dict[str, Any]:
    summary = {
        name: {
            b: {"median": round(statistics.median(v), 2), "min": round(min(v), 2)}
            for b, v in per.items()
        }
        for name, per in times.items()
    }
    ratios: dict[str, list[float]] = {
        "worker/standalone b1": [],
        "torch best/worker b1": [],
        "worker tok/s over torch best b8": [],
    }
    for r in range(rounds):

        def t(name: str, b: int, r: int = r) -> float:
            return times[name][b][r]

        torch1 = min(t("torch-fp32", 1), t("torch-bf16", 1))
        torch8 = min(t("torch-fp32", 8), t("torch-bf16", 8))
        ratios["worker/standalone b1"].append(t("openvino", 1) / t("openvino-standalone", 1))
        ratios["torch best/worker b1"].append(torch1 / t("openvino", 1))
        ratios["worker tok/s over torch best b8"].append(torch8 / t("openvino", 8))
    return {
        "steps_ms": summary,
        "ratios_per_round": {k: [round(x, 3) for x in v] for k, v in ratios.items()},
        "ratios_median": {k: round(statistics.median(v), 3) for k, v in ratios.items()},
        "targets": {
            "worker/standalone b1": "<= 1.15",
            "torch best/worker b1": ">= 2.5",
            "worker tok/s over torch best b8": ">= 3",
        },
        "arbiter_overhead": round(overhead, 5),
    }


if __name__ == "__main__":
    main()
