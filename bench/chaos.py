"""Chaos: kill or pause each part of a live stack mid-stream, under load, and check that no
stream is lost and every text is the one an uninterrupted run gives (docs/RELIABILITY.md).

    python -m bench.chaos [--model-dir DIR] [--streams 8] [--max-tokens 128] [--json OUT]

The stack runs as processes, as `slinfer up --cpu-nodes 2 --schedulers 2` starts it (two CPU
workers pinned to a core each, two gateway replicas, authentication on). The client is the
SDK with both gateway addresses. The model runs on the PyTorch engine and requests are
deterministic greedy (`deterministic=True`, temperature 0): their text does not depend on
the batch or on a re-dispatch, so "identical" is exact. For each fault, `--streams` requests
stream at once; once each has received a few chunks the fault is injected:

- worker: SIGKILL of the worker hosting the streams (they fail over to the other node);
- scheduler: SIGKILL of the gateway replica the client streams from (the SDK resumes on the
  other replica with the tokens it received);
- memory / consolidator: SIGKILL of the service (the streams go on without it);
- etcd: SIGSTOP of etcd for `--pause-s` seconds, then SIGCONT.

A killed process is started again after the round (what a supervisor does), so every round
starts from a whole stack. Reported per fault: streams, completed, lost (ended with an error),
identical (text equal to the reference run's), the longest gap between two chunks of a stream
(the time the fault cost it) and the round's duration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.live_procs import ProcStack, proc_stack
from slinfer import Chunk, Completion
from slinfer.cli.stack import restart_service
from slinfer.client import AsyncClient

FAULTS = ("worker", "scheduler", "memory", "consolidator", "etcd")
PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle stays upright.",
    "List some facts about the moon.",
    "Describe a busy market in the morning.",
    "What makes bread rise?",
    "Tell me about the history of paper.",
    "How do bees make honey?",
    "Describe the water cycle.",
    "Why is the sky blue?",
    "Give advice to a new gardener.",
    "Describe a train journey through mountains.",
    "What is a prime number?",
]


@dataclass
class Round:
    fault: str
    streams: int
    completed: int = 0
    lost: int = 0
    identical: int = 0
    max_gap_s: float = 0.0
    duration_s: float = 0.0
    errors: list[str] = field(default_factory=list)


@dataclass
class Stream:
    prompt: str
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    chunks: int = 0
    last_at: float = 0.0
    max_gap_s: float = 0.0
    final: Completion | None = None
    error: str = ""


async def _run_stream(client: AsyncClient, s: Stream, ask: dict) -> None:
    s.last_at = time.monotonic()
    try:
        async for ev in client.generate("chaos", s.prompt, **ask):
            now = time.monotonic()
            if isinstance(ev, Chunk):
                s.text += ev.text
                s.token_ids.extend(ev.token_ids)
                s.chunks += 1
                s.max_gap_s = max(s.max_gap_s, now - s.last_at)
                s.last_at = now
            else:
                s.final = ev
    except Exception as exc:  # a lost stream: what the client saw
        s.error = f"{type(exc).__name__}: {exc}"


async def _busy_node(client: AsyncClient) -> str | None:
    status = await client.status()
    busy = [i for i in status.instances if i.model_id == "chaos" and i.running + i.waiting]
    return max(busy, key=lambda i: i.running + i.waiting).node_id if busy else None


async def _inject(ps: ProcStack, client: AsyncClient, fault: str, pause_s: float) -> str:
    """Inject the fault; returns the name of the process to start again afterwards."""
    if fault == "etcd":
        os.kill(ps.stack.etcd_pid, signal.SIGSTOP)
        await asyncio.sleep(pause_s)
        os.kill(ps.stack.etcd_pid, signal.SIGCONT)
        return ""
    if fault == "worker":
        node = await _busy_node(client) or "cpu-0"
        name = "worker" if node == "cpu-0" else f"worker-{node.removeprefix('cpu-')}"
    elif fault == "scheduler":
        name = "scheduler" if client._current == 0 else f"scheduler-{client._current}"
    else:
        name = fault
    os.kill(ps.stack.pids[name], signal.SIGKILL)
    return name


async def _round(
    ps: ProcStack, client: AsyncClient, fault: str, references: dict[str, str], args
) -> Round:
    ask = {"max_tokens": args.max_tokens, "temperature": 0, "ignore_eos": True,
           "deterministic": True}  # fmt: skip
    streams = [Stream(PROMPTS[i % len(PROMPTS)]) for i in range(args.streams)]
    t0 = time.monotonic()
    tasks = [asyncio.create_task(_run_stream(client, s, ask)) for s in streams]
    deadline = time.monotonic() + 120
    while not all(s.chunks >= 3 or s.final or s.error for s in streams):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    killed = await _inject(ps, client, fault, args.pause_s)
    await asyncio.gather(*tasks)
    result = Round(fault, len(streams), duration_s=round(time.monotonic() - t0, 2))
    for s in streams:
        if s.error or s.final is None:
            result.lost += 1
            result.errors.append(s.error or "no final message")
            continue
        result.completed += 1
        ok = s.text == references[s.prompt] and s.final.completion_tokens == len(s.token_ids)
        result.identical += ok
        result.max_gap_s = round(max(result.max_gap_s, s.max_gap_s), 2)
    if killed:
        await asyncio.to_thread(restart_service, ps.stack, ps.config, killed)
    return result


async def run(args: argparse.Namespace) -> dict:
    model_dir = args.model_dir or _smollm2()
    async with proc_stack(
        cpu_nodes=2, schedulers=2, keep_alive_s=600.0, worker_memory=args.worker_memory,
        keep_logs=args.keep_logs,
    ) as ps:  # fmt: skip
        client = ps.new_client(retries=8, stream_timeout_s=300.0)
        # Deterministic decoding is the PyTorch engine's (docs/RELIABILITY.md).
        await client.deploy(
            "chaos", str(model_dir), ttft_slo_s=60.0, tpot_slo_s=5.0, engine="torch"
        )
        ask = {"max_tokens": args.max_tokens, "temperature": 0, "ignore_eos": True,
               "deterministic": True}  # fmt: skip
        # Deterministic requests: run together, each gives its text alone.
        prompts = sorted({PROMPTS[i % len(PROMPTS)] for i in range(args.streams)})
        results = await asyncio.gather(*(client.complete("chaos", p, **ask) for p in prompts))
        references = {p: r.text for p, r in zip(prompts, results, strict=True)}
        rounds = []
        for fault in args.faults:
            r = await _round(ps, client, fault, references, args)
            rounds.append(r)
            print(_row(r), flush=True)
        await client.close()
    return {
        "model": str(model_dir),
        "streams": args.streams,
        "max_tokens": args.max_tokens,
        "cpu": _cpu(),
        "dtype": os.environ.get("SLINFER_CPU_DTYPE", "auto"),
        "rounds": [asdict(r) for r in rounds],
        "lost": sum(r.lost for r in rounds),
        "all_identical": all(r.identical == r.streams for r in rounds),
    }


def _smollm2() -> Path:
    from slinfer.models import build_smollm2

    return build_smollm2()


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))  # fmt: skip
    except (OSError, StopIteration):
        name = platform.processor()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    avx = sorted({w for w in flags.split() if w.startswith("avx512")})
    return f"{name} ({', '.join(avx) or 'no AVX-512'})"


HEADER = (
    f"{'fault':<13}{'streams':>8}{'completed':>10}{'lost':>6}{'identical':>10}"
    f"{'max gap s':>10}{'round s':>9}"
)


def _row(r: Round) -> str:
    return (
        f"{r.fault:<13}{r.streams:>8}{r.completed:>10}{r.lost:>6}{r.identical:>10}"
        f"{r.max_gap_s:>10.2f}{r.duration_s:>9.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=None, help="default: SmolLM2-135M")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--pause-s", type=float, default=4.0, help="etcd pause (< lease TTL)")
    parser.add_argument("--worker-memory", default="4GiB")
    parser.add_argument("--faults", nargs="+", default=list(FAULTS), choices=FAULTS)
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy the logs here")
    args = parser.parse_args()
    print(HEADER, flush=True)
    report = asyncio.run(run(args))
    print(f"\nlost streams: {report['lost']}; every text identical to the uninterrupted run: "
          f"{report['all_identical']}; {report['cpu']}, dtype {report['dtype']}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
