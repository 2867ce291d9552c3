"""One point of the live capacity walk (bench/live_capacity.py): live, then simulated.

A point is (mode, models, rate). The stack runs as separate processes (bench/live_procs.py);
the replay's requests are the trace's, their lengths scaled and clipped as `slinfer replay`
does, so the simulator is given exactly the requests the gateway saw, with the tables, load
throughput and per-iteration overhead the live workers measured during that point.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench.live_procs import NodeSampler, proc_stack
from slinfer.policy import SystemName
from slinfer.policy.config import Admission
from slinfer.replay import ReplayConfig, replay, request_lengths
from slinfer.services.common import keys
from slinfer.services.common.records import InstanceRecord, NodeRecord
from slinfer.services.common.store import Store
from slinfer.services.scheduler.dispatch_config import LIVE_POLICY
from slinfer.sim.live import LiveModel, LiveSetup, SentRequest, simulate_live, trace_of
from slinfer.sim.metrics import percentile
from slinfer.sim.trace import load_trace

SYSTEMS = {
    "slinfer": SystemName.SLINFER,
    "slinfer-no-defrag": SystemName.SLINFER_NO_DEFRAG,
    "exclusive": SystemName.SLLM_C,
}


@dataclass(frozen=True, slots=True)
class Point:
    mode: str
    models: int
    rate: float


@dataclass(frozen=True, slots=True)
class Measured:
    """What the warm-up measured: the model and the nodes, as the simulator needs them."""

    model: LiveModel
    label: str
    node_memory_bytes: int
    load_bytes_per_s: float
    iteration_overhead_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def setup(self, args: argparse.Namespace, node: dict[str, float] | None = None) -> LiveSetup:
        """The simulator's model of the live cluster; `node`: figures measured in a point."""
        node = node or {}
        policy = LIVE_POLICY
        if "--admission" in args.scheduler_arg:
            value = args.scheduler_arg[args.scheduler_arg.index("--admission") + 1]
            policy = replace(policy, admission=Admission(value))
        return LiveSetup(
            model=self.model,
            label=self.label,
            nodes=args.nodes,
            node_memory_bytes=self.node_memory_bytes,
            load_bytes_per_s=node.get("load_bytes_per_s") or self.load_bytes_per_s,
            iteration_overhead_s=node.get("iteration_overhead_s", self.iteration_overhead_s),
            keep_alive_s=args.keep_alive,
            ttft_slo_s=0.5 * args.slo_scale,
            tpot_slo_s=0.25 * args.slo_scale,
            policy=policy,
        )


def stack_kwargs(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    system = SYSTEMS[mode].value
    return {
        "cpu_nodes": args.nodes,
        "worker_memory": args.worker_memory,
        "keep_alive_s": args.keep_alive,
        "scheduler_args": [
            "--system",
            system,
            "--kv-tokens",
            str(args.kv_tokens),
            *args.scheduler_arg,
        ],  # fmt: skip
        "consolidator_args": [
            "--system",
            system,
            "--kv-tokens",
            str(args.kv_tokens),
            "--pack-every",
            str(args.pack_every),
        ],  # fmt: skip
    }


async def _etcd_values(endpoint: str, prefix: str) -> list[dict[str, Any]]:
    store = Store(endpoint)
    await store.connect()
    try:
        entries, _ = await store.list(prefix)
        return [e.value for e in entries]
    finally:
        await store.close()


async def _nodes(endpoint: str) -> list[NodeRecord]:
    return [NodeRecord.from_etcd(v) for v in await _etcd_values(endpoint, keys.NODES)]


def _node_figures(nodes: list[NodeRecord]) -> dict[str, float]:
    if not nodes:
        return {}
    rates = [n.load_bytes_per_s for n in nodes]
    overheads = [n.iteration_overhead_s for n in nodes]
    return {
        "load_bytes_per_s": max(rates),
        "iteration_overhead_s": sum(overheads) / len(overheads),
    }


async def measure_setup(args: argparse.Namespace, model: Path) -> Measured:
    """Load SmolLM2 once per node (its tables are measured and cached for the walk) and read
    what the simulator needs from etcd."""
    async with proc_stack(**stack_kwargs(args, "slinfer-no-defrag")) as ps:
        for j in range(args.nodes):
            await ps.client.deploy(f"warm{j}", str(model))
            await ps.client.complete(f"warm{j}", prompt_token_ids=list(range(10, 74)),
                                     max_tokens=8)  # fmt: skip
        endpoint = ps.stack.etcd_endpoint
        profiles = await _etcd_values(endpoint, keys.PROFILES)
        instances = [
            InstanceRecord.from_etcd(v) for v in await _etcd_values(endpoint, keys.INSTANCES)
        ]
        nodes = await _nodes(endpoint)
    inst = next(i for i in instances if i.weights_bytes)
    tables = next(p for p in profiles if p.get("label"))
    figures = _node_figures(nodes)
    return Measured(
        model=LiveModel(
            name="smollm2",
            weights_bytes=inst.weights_bytes,
            kv_bytes_per_token=inst.kv_bytes_per_token,
            kv_pool_tokens=args.kv_tokens,
            prefill_ms=tables["prefill_ms"],
            decode_ms=tables["decode_ms"],
        ),
        label=str(tables["label"]),
        node_memory_bytes=nodes[0].memory_bytes,
        load_bytes_per_s=figures["load_bytes_per_s"],
        iteration_overhead_s=figures["iteration_overhead_s"],
    )


def sent_requests(args: argparse.Namespace, point: Point, max_len: int) -> list[SentRequest]:
    """The requests `replay` sends for this point (same selection, timing and lengths)."""
    trace = load_trace(args.trace, point.models, args.duration, point.rate / args.time_scale)
    out = []
    for r in trace.requests:
        n_in, n_out = request_lengths(r, args.length_scale, max_len)
        out.append(SentRequest(r.arrival_s, r.function, n_in, n_out))
    return out


async def run_point(point: Point, args: argparse.Namespace, model: Path) -> dict[str, Any]:
    logs = Path(args.logs) / f"{point.mode}_{point.models}_{point.rate:g}" if args.logs else None
    records_path = args.work / f"{point.mode}_{point.models}_{point.rate:g}.jsonl"
    slo = {"ttft_slo_s": 0.5 * args.slo_scale, "tpot_slo_s": 0.25 * args.slo_scale}
    async with proc_stack(**stack_kwargs(args, point.mode), keep_logs=logs) as ps:
        ids = tuple(f"m{j}" for j in range(point.models))
        for mid in ids:
            await ps.client.deploy(mid, str(model), keep_alive_s=args.keep_alive, **slo)
        max_len = (await ps.client.models())[0].max_model_len or 2048
        cfg = ReplayConfig(
            trace=args.trace,
            model_ids=ids,
            models=point.models,
            time_scale=args.time_scale / point.rate,
            duration_s=args.duration,
            length_scale=args.length_scale,
            seed=args.seed,
        )
        sampler = NodeSampler(ps.client)
        sampler.start()
        summary = (await replay(ps.client, cfg, records_path)).as_dict()
        avg_nodes = await sampler.stop()
        node = _node_figures(await _nodes(ps.stack.etcd_endpoint))
    records = [json.loads(line) for line in records_path.read_text().splitlines()]
    done = [r for r in records if r["outcome"] == "done"]
    n = max(len(records), 1)
    sent = sent_requests(args, point, max_len)
    setup = args.setup.setup(args, node)
    pack = args.pack_every if point.mode == "slinfer" else 0.0
    span = args.duration * args.time_scale / point.rate
    trace = trace_of("live", sent, span)
    sim, _ = simulate_live(setup, SYSTEMS[point.mode], trace, pack_every_s=pack, seed=args.seed)
    return {
        "mode": point.mode,
        "models": point.models,
        "rate": point.rate,
        "requests": len(records),
        "slo_met": summary["slo_met"],
        "attainment": round(summary["slo_met"] / n, 4),
        "attainment_strict": round(summary["slo_met_strict"] / n, 4),
        "admitted": len(done),
        "admitted_slo_met": sum(r["slo_met"] for r in done),
        "ttft_p50_s": percentile([r["ttft_s"] for r in done], 0.5),
        "ttft_p99_s": percentile([r["ttft_s"] for r in done], 0.99),
        "tpot_p50_s": percentile([r["tpot_s"] for r in done if r["output_tokens"] > 1], 0.5),
        "tpot_p99_s": percentile([r["tpot_s"] for r in done if r["output_tokens"] > 1], 0.99),
        "avg_nodes": round(avg_nodes, 3),
        "sim_attainment": round(sim.attainment, 4),
        "sim_requests": sim.requests,
        "failed": summary["failed"],
        "node": node,
    }
