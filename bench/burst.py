"""A burst of concurrent streams: does admission protect what it admits? (docs/RELIABILITY.md)

    python -m bench.burst [--streams 200] [--model-dir DIR] [--cpu-nodes 2] [--json OUT]

The stack runs as processes (`slinfer up --cpu-nodes 2`), the model (default SmolLM2-135M)
is deployed with the default SLOs and warmed (one instance loaded), then `--streams` chat
requests arrive at once. Each is either admitted, and then meets its SLO or not — TTFT
(gateway arrival to first token, cold-start load excused as the paper counts it) within the
TTFT SLO and mean TPOT within the TPOT SLO — or refused with RESOURCE_EXHAUSTED. Reported:
admitted, SLO met among them (%), refused and how long a refusal took, other errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

from bench.chaos import _cpu, _smollm2
from bench.live_procs import metric_sum, proc_stack, scrape
from slinfer import Chunk, Completion, SlinferError
from slinfer.client import AsyncClient
from slinfer.policy import SloPolicy

QUESTIONS = [
    "What is the capital of France?", "Name three primary colours.", "What is 12 times 7?",
    "Who wrote Hamlet?", "What is the boiling point of water?", "Say hello in Spanish.",
    "What is a noun?", "How many legs does a spider have?", "What colour is the sky?",
    "Name a planet.",
]  # fmt: skip


TTFT_SLO: float | None = None  # the deployed TTFT SLO, when one is given (--ttft-slo)


@dataclass
class Outcome:
    admitted: bool
    slo_met: bool = False
    ttft_s: float = 0.0
    tpot_s: float = 0.0
    refused_after_s: float = 0.0
    error: str = ""


async def one(
    client: AsyncClient, i: int, max_tokens: int, slo: SloPolicy, raw: bool
) -> Outcome:
    t0 = time.monotonic()
    first: float | None = None
    final: Completion | None = None
    question = QUESTIONS[i % len(QUESTIONS)]
    prompt = {"prompt": question} if raw else {
        "messages": [{"role": "user", "content": question}]
    }
    try:
        async for ev in client.generate(
            "burst", **prompt, max_tokens=max_tokens, temperature=0, ignore_eos=True
        ):
            if isinstance(ev, Chunk) and first is None:
                first = time.monotonic()
            elif isinstance(ev, Completion):
                final = ev
    except SlinferError as exc:
        if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED and first is None:
            return Outcome(False, refused_after_s=time.monotonic() - t0)
        return Outcome(first is not None, error=f"{exc.code.name}: {exc.message[:120]}")
    assert final is not None
    ttft = final.ttft_s - final.load_s  # cold-start load excused (the paper's view)
    ttft_slo = TTFT_SLO or slo.ttft_s(final.prompt_tokens)
    ok = ttft <= ttft_slo and final.tpot_s <= slo.tpot_s
    return Outcome(True, ok, ttft, final.tpot_s)


async def run(args: argparse.Namespace) -> dict:
    model_dir = args.model_dir or _smollm2()
    slo = SloPolicy(tpot_s=args.tpot_slo) if args.tpot_slo else SloPolicy()
    deploy_slo = {k: v for k, v in (("ttft_slo_s", args.ttft_slo), ("tpot_slo_s", args.tpot_slo))
                  if v}  # fmt: skip
    async with proc_stack(cpu_nodes=args.cpu_nodes, keep_alive_s=600.0,
                          worker_memory=args.worker_memory) as ps:  # fmt: skip
        client = ps.new_client(retries=1, stream_timeout_s=300.0)
        await client.deploy("burst", str(model_dir), **deploy_slo)
        await client.complete("burst", "Hi", max_tokens=4)
        # Warm-up waves: a running system has history (the devices' calibration, the
        # gateway's SLO guard); a burst on a stack that has served nothing measures a cold
        # start of everything instead.
        for _ in range(args.warmup_waves):
            await asyncio.gather(
                *(one(client, i, args.max_tokens, slo, args.raw) for i in range(args.warmup))
            )
        margin = metric_sum(scrape(ps.config.metrics_base + 1), "slinfer_gateway_slo_margin")
        t0 = time.monotonic()
        outcomes = await asyncio.gather(
            *(one(client, i, args.max_tokens, slo, args.raw) for i in range(args.streams))
        )
        wall = time.monotonic() - t0
        await client.close()
        metrics = scrape(ps.config.metrics_base + 1)
        def mean(name: str) -> float | None:
            count = metric_sum(metrics, name + "_count")
            return round(metric_sum(metrics, name + "_sum") / count, 3) if count else None

        gateway = {
            "ttft_mean_s": mean("slinfer_gateway_ttft_seconds"),
            "admit_mean_s": mean("slinfer_gateway_admit_seconds"),
            "worker_first_token_mean_s": mean("slinfer_gateway_worker_first_token_seconds"),
        }
        decisions = {
            k.split("{", 1)[1].rstrip("}"): int(v)
            for k, v in metrics.items()
            if k.startswith("slinfer_gateway_admission_decisions_total{")
        }
        nodes = {}
        for i in range(args.cpu_nodes):
            w = scrape(ps.config.metrics_base + 11 + i)
            nodes[f"cpu-{i}"] = {
                "iterations": int(metric_sum(w, "slinfer_worker_iteration_seconds_count")),
                "busy_s": round(metric_sum(w, "slinfer_worker_iteration_seconds_sum"), 1),
            }
    admitted = [o for o in outcomes if o.admitted and not o.error]
    refused = [o for o in outcomes if not o.admitted and not o.error]
    errors = [o for o in outcomes if o.error]
    met = sum(o.slo_met for o in admitted)
    ttfts = sorted(o.ttft_s for o in admitted)
    report = {
        "streams": args.streams,
        "ttft_slo_s": args.ttft_slo,
        "tpot_slo_s": slo.tpot_s,
        "cpu_nodes": args.cpu_nodes,
        "max_tokens": args.max_tokens,
        "model": str(model_dir),
        "cpu": _cpu(),
        "dtype": os.environ.get("SLINFER_CPU_DTYPE", "auto"),
        "admitted": len(admitted),
        "slo_met": met,
        "slo_met_pct": round(100.0 * met / len(admitted), 1) if admitted else 0.0,
        "refused": len(refused),
        "refusal_s_p50": round(statistics.median(o.refused_after_s for o in refused), 3)
        if refused
        else None,
        "refusal_s_max": round(max(o.refused_after_s for o in refused), 3) if refused else None,
        "ttft_s_p50": round(statistics.median(ttfts), 3) if ttfts else None,
        "ttft_s_p95": round(ttfts[int(0.95 * (len(ttfts) - 1))], 3) if ttfts else None,
        "errors": [o.error for o in errors],
        "slo_margin_at_burst": round(margin, 3),
        "decisions": decisions,
        "gateway": gateway,
        "nodes": nodes,
        "wall_s": round(wall, 1),
        "outcomes": [asdict(o) for o in outcomes] if args.details else None,
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.burst", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--cpu-nodes", type=int, default=2)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--worker-memory", default="4GiB")
    parser.add_argument("--raw", action="store_true", help="raw prompts, no chat template")
    parser.add_argument("--warmup", type=int, default=40, help="streams per warm-up wave")
    parser.add_argument("--ttft-slo", type=float, default=None, help="deploy with this TTFT SLO")
    parser.add_argument("--tpot-slo", type=float, default=None, help="deploy with this TPOT SLO")
    parser.add_argument("--warmup-waves", type=int, default=3)
    parser.add_argument("--details", action="store_true", help="every outcome in the JSON")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    global TTFT_SLO
    TTFT_SLO = args.ttft_slo
    report = asyncio.run(run(args))
    shown = {k: v for k, v in report.items() if k != "outcomes"}
    print(json.dumps(shown, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
