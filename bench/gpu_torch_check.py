"""Live sharing with two models on one GPU, PyTorch engine (`device=cuda`), no vLLM.

Run by bench/gpu_torch_check.sh on a machine with an NVIDIA GPU and a CUDA build of PyTorch;
`--dry-run` runs the same check on this machine's CPU (the tests do), with tiny models.

1. a live stack (etcd, scheduler, memory service, one worker of kind `gpu`, or `cpu` for the
   dry run) serves two random-weight models of different architectures, engine=torch;
2. each model answers one greedy request alone, then both models' requests run concurrently
   (the arbiter interleaves their iterations on the one device): every request's tokens must
   equal what it produced alone (interleaving is invisible);
3. reported: per-instance iteration times (median, p90, as the device loop saw them), how the
   grants alternated, and the arbiter's overhead (its decision time over iteration time).

Exit status 1 if a check fails. Written for an H200-class GPU; not yet run on one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path

# ~0.5B-parameter shapes on the GPU (built locally in seconds); tiny on the dry run.
GPU_SIZE = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 16,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "max_position_embeddings": 4096,
}
PROMPT = [5, 6, 7, 8, 9, 10, 11, 12]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(dry_run: bool, requests: int, tokens: int) -> dict[str, object]:
    from slinfer.models import build_random_model
    from slinfer.services.common.etcd_process import start_etcd
    from slinfer.services.inprocess import LiveStack

    if not dry_run:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device visible to PyTorch (a CPU build of torch?)")
    root = Path(tempfile.mkdtemp(prefix="gpu-torch-check-"))
    size = {} if dry_run else GPU_SIZE
    models = {
        "a": build_random_model("llama", root / "a", seed=0, **size),
        "b": build_random_model("qwen2", root / "b", seed=1, **size),
    }
    kind = "cpu" if dry_run else "gpu"
    etcd = start_etcd()
    try:
        stack = await LiveStack.start(
            etcd.endpoint,
            workers=[
                {
                    "node_id": f"{kind}-0",
                    "kind": kind,
                    "memory_bytes": (2 << 30) if dry_run else (64 << 30),
                    "num_threads": 1 if dry_run else None,
                    "profile_dir": root / "profiles",
                }
            ],
        )
        try:
            for name, path in models.items():
                await stack.c.deploy(
                    name, str(path), engine="torch", device=kind, ttft_slo_s=60.0, tpot_slo_s=5.0
                )

            async def ask(model: str, i: int) -> tuple[str, int]:
                """The streamed text and token count of one greedy request."""
                r = await stack.c.complete(
                    model,
                    prompt_token_ids=[*PROMPT, i],
                    max_tokens=tokens,
                    temperature=0,
                    ignore_eos=True,
                )
                return r.text, r.completion.completion_tokens

            alone = {(m, i): await ask(m, i) for m in models for i in range(requests)}
            device = stack.workers[0].device
            mark = len(device.iteration_log)
            decide_before, iter_before = device.arbiter.decide_s_total, device.iteration_s_total
            jobs = [(m, i) for i in range(requests) for m in models]
            together = await asyncio.gather(*(ask(m, i) for m, i in jobs))
            same = all(alone[job] == out for job, out in zip(jobs, together, strict=True))
            log = list(device.iteration_log)[mark:]
            per: dict[str, list[float]] = {}
            for start, end, iid, phase, _batch in log:
                if phase != "idle":
                    per.setdefault(iid, []).append((end - start) * 1000)
            switches = sum(1 for x, y in zip(log, log[1:], strict=False) if x[2] != y[2])
            decide = device.arbiter.decide_s_total - decide_before
            iterate = device.iteration_s_total - iter_before
            return {
                "device": kind,
                "interleaving_invisible": same,
                "instances_interleaved": len(per) == 2 and switches > 0,
                "iterations": len(log),
                "switches": switches,
                "iteration_ms": {
                    iid: {
                        "n": len(v),
                        "median": round(statistics.median(v), 3),
                        "p90": round(_pct(v, 0.9), 3),
                    }
                    for iid, v in per.items()
                },
                "arbiter_overhead": round(decide / iterate, 5) if iterate > 0 else None,
            }
        finally:
            await stack.stop()
    finally:
        etcd.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="on this machine's CPU, tiny models")
    ap.add_argument("--requests", type=int, default=3, help="requests per model")
    ap.add_argument("--tokens", type=int, default=24, help="tokens per request")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    report = asyncio.run(run(args.dry_run, args.requests, args.tokens))
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    ok = bool(report["interleaving_invisible"]) and bool(report["instances_interleaved"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
