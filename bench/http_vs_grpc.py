"""Tokens/s through the HTTP front vs the gRPC gateway, interleaved in one run.

    flock /tmp/slinfer-bench.lock .venv/bin/python -m bench.http_vs_grpc \
        [--rounds 6] [--streams 1,4] [--tokens 128] [--json PATH]

One process stack (`slinfer up`'s: etcd, scheduler, memory, consolidator, one CPU worker,
the HTTP front) serving SmolLM2-135M. Each round runs the same load through both paths, one
after the other, alternating which goes first: `--streams` concurrent streaming requests of
exactly `--tokens` greedy tokens (ignore_eos). The gRPC side is the slinfer SDK reading every
chunk; the HTTP side is an httpx client reading every server-sent event and parsing its JSON
(what an OpenAI client does). tokens/s = completion tokens of the round / its wall time.
Reported: per-round figures, the medians, the ratio HTTP / gRPC of the medians, the median
of the rounds' paired ratios (robust to the load drifting between rounds), and the CPU
each process spent per token (from /proc), which shows the HTTP front's own cost apart from
the machine's noise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx

from bench.live_procs import proc_stack
from slinfer import AsyncClient, Chunk
from slinfer.models import build_smollm2

PROMPT = "Write a long story about a lighthouse keeper and the sea."
MODEL = "smollm2"


async def _grpc_stream(client: AsyncClient, tokens: int) -> int:
    n = 0
    async for ev in client.generate(
        MODEL, PROMPT, max_tokens=tokens, temperature=0, ignore_eos=True
    ):
        if not isinstance(ev, Chunk):
            n = ev.completion_tokens
    return n


async def _http_stream(http: httpx.AsyncClient, url: str, tokens: int) -> int:
    body = {
        "model": MODEL,
        "prompt": PROMPT,
        "max_tokens": tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    n = 0
    async with http.stream("POST", url, json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                n = event["usage"]["completion_tokens"]
    return n


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (/proc/PID/stat)."""
    fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _round(path: str, streams: int, tokens: int, grpc_c, http_c, url) -> dict[str, float]:
    t0 = time.perf_counter()
    if path == "grpc":
        counts = await asyncio.gather(*(_grpc_stream(grpc_c, tokens) for _ in range(streams)))
    else:
        counts = await asyncio.gather(*(_http_stream(http_c, url, tokens) for _ in range(streams)))
    wall = time.perf_counter() - t0
    assert all(c == tokens for c in counts), counts
    return {"tokens": sum(counts), "wall_s": wall, "tok_s": sum(counts) / wall}


def _cpu() -> dict[str, Any]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next(
        (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if "Model name" in ln), ""
    )
    flags = open("/proc/cpuinfo").read()
    avx512 = sorted({w for w in flags.split() if w.startswith("avx512")})
    return {"model": model or platform.processor(), "avx512": avx512}


async def run(
    rounds: int, streams_list: list[int], tokens: int, threads: int | None
) -> dict[str, Any]:
    path = str(build_smollm2())
    async with proc_stack(worker_memory="4GiB", keep_alive_s=3600, worker_threads=threads) as ps:
        url = f"http://{ps.stack.http}/v1/completions"
        await ps.client.deploy(MODEL, path, ttft_slo_s=60.0, tpot_slo_s=10.0)
        async with httpx.AsyncClient(timeout=600) as http:
            await _round("grpc", 1, 8, ps.client, http, url)  # load + warm both paths
            await _round("http", 1, 8, ps.client, http, url)
            results: dict[str, Any] = {}
            for streams in streams_list:
                rows = []
                for r in range(rounds):
                    order = ("grpc", "http") if r % 2 == 0 else ("http", "grpc")
                    row = {}
                    for p in order:
                        c0 = {n: cpu_s(pid) for n, pid in ps.stack.pids.items()}
                        row[p] = await _round(p, streams, tokens, ps.client, http, url)
                        for n, pid in ps.stack.pids.items():  # CPU ms per token, per process
                            used = cpu_s(pid) - c0[n]
                            row[p][f"cpu_ms_per_token_{n}"] = 1000 * used / row[p]["tokens"]
                    row["ratio"] = row["http"]["tok_s"] / row["grpc"]["tok_s"]
                    rows.append(row)
                    print(
                        f"streams={streams} round={r} grpc={row['grpc']['tok_s']:.1f} "
                        f"http={row['http']['tok_s']:.1f} tok/s ratio={row['ratio']:.3f}",
                        flush=True,
                    )
                http_cpu = statistics.median(r["http"]["cpu_ms_per_token_http"] for r in rows)
                sched_cpu = statistics.median(
                    r[p]["cpu_ms_per_token_scheduler"] for r in rows for p in ("grpc", "http")
                )
                med_g = statistics.median(r["grpc"]["tok_s"] for r in rows)
                med_h = statistics.median(r["http"]["tok_s"] for r in rows)
                results[str(streams)] = {
                    "rounds": rows,
                    "grpc_tok_s_median": med_g,
                    "http_tok_s_median": med_h,
                    "ratio_of_medians": med_h / med_g,
                    "ratio_median": statistics.median(r["ratio"] for r in rows),
                    "http_front_cpu_ms_per_token_median": http_cpu,
                    "scheduler_cpu_ms_per_token_median": sched_cpu,
                }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--streams", default="1,4", help="concurrent streams, comma-separated")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument(
        "--worker-threads", type=int, default=1, help="torch threads of the worker (0: torch's)"
    )
    parser.add_argument("--json", default=None)
    ns = parser.parse_args()
    streams = [int(s) for s in ns.streams.split(",")]
    results = asyncio.run(run(ns.rounds, streams, ns.tokens, ns.worker_threads or None))
    cpu = _cpu()
    print(f"\nCPU: {cpu['model']} ({', '.join(cpu['avx512']) or 'no AVX-512'})")
    print(
        f"{'streams':>8}{'gRPC tok/s':>12}{'HTTP tok/s':>12}{'ratio of medians':>18}"
        f"{'median paired ratio':>21}{'HTTP front CPU ms/tok':>23}{'scheduler CPU ms/tok':>22}"
    )
    for s, r in results.items():
        print(
            f"{s:>8}{r['grpc_tok_s_median']:>12.1f}{r['http_tok_s_median']:>12.1f}"
            f"{r['ratio_of_medians']:>18.3f}{r['ratio_median']:>21.3f}"
            f"{r['http_front_cpu_ms_per_token_median']:>23.2f}"
            f"{r['scheduler_cpu_ms_per_token_median']:>22.2f}"
        )
    if ns.json:
        with open(ns.json, "w") as fh:
            json.dump(
                {
                    "bench": "http_vs_grpc",
                    "command": " ".join(["python -m bench.http_vs_grpc", *sys.argv[1:]]),
                    "cpu": cpu,
                    "tokens": ns.tokens,
                    "worker_threads": ns.worker_threads,
                    "results": results,
                },
                fh,
                indent=2,
            )


if __name__ == "__main__":
    main()
