"""The watermark live (docs/MEMORY.md): fewer KV resizes than none, side by side."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from slinfer import Completion
from slinfer.services.common.etcd_process import start_etcd
from slinfer.services.inprocess import LiveStack
from slinfer.services.scheduler.dispatch_config import LIVE_POLICY, DispatchConfig
from tests.live.support import lockstep
from tests.live.waits import wait_until

pytestmark = [
    pytest.mark.live,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.usefixtures("torch_engine_default"),  # tests/live/conftest.py
]


async def test_watermark_keeps_resizes_few(tiny_models, profile_dir, limit, plain_weights):
    """Six requests decoding together, side by side with watermark 0.25 and with none. Past
    the mean output their KV demand grows by six tokens an iteration: without a watermark
    the allocation follows it block by block, with one it moves in 25 % steps. The instance
    runs in lockstep (one iteration, then the scheduler's evaluation and the worker's resize
    settle), so both runs see the same demand, iteration by iteration, on any CPU."""
    counts, evaluations = {}, {}
    for w in (0.25, 0.0):
        etcd = start_etcd()  # one cluster per run: nothing shared but the model files
        s = await LiveStack.start(
            etcd.endpoint,
            workers=[
                {
                    "node_id": f"wm-{int(w * 100)}",
                    "memory_bytes": limit,
                    "num_threads": 1,
                    "profile_dir": profile_dir,
                }
            ],
            dispatch=DispatchConfig(
                default_kv_capacity_tokens=256,
                policy=replace(LIVE_POLICY, l_min_tokens=32, watermark=w),
            ),
        )
        try:
            name = f"batch-{int(w * 100)}"
            await s.c.deploy(
                name, str(tiny_models["llama"]), ttft_slo_s=60.0, tpot_slo_s=5.0,
                weights=plain_weights,
            )  # fmt: skip

            async def one(i: int, max_tokens: int, s=s, name=name) -> Completion:  # noqa: ANN001
                final = None
                async for ev in s.c.generate(
                    name,
                    prompt_token_ids=[5 + (i + k) % 100 for k in range(24)],
                    max_tokens=max_tokens,
                    ignore_eos=True,
                    temperature=0,
                ):
                    if isinstance(ev, Completion):
                        final = ev
                assert final is not None
                return final

            first = await one(0, 16)  # cold start and Ō's first sample (16 tokens)
            worker, dispatcher = s.workers[0], s.scheduler.dispatcher
            iid = first.instance_id
            inst = worker.instances[iid]
            kv = dispatcher.kv
            await wait_until(lambda kv=kv: not kv._tasks, what="the cold start's KV settled")
            base = worker.memory.counters.resizes
            asked = sum(kv.statuses.values())
            with lockstep(inst.engine) as gate:
                tasks = [asyncio.create_task(one(i, 160)) for i in range(1, 7)]
                await wait_until(lambda inst=inst: len(inst.streams) == 6, what="six requests in")
                live = list(dispatcher.tracker.by_instance[iid].values())  # white-box

                def settled(n: int, live=live, kv=kv, iid=iid, worker=worker, gate=gate) -> bool:
                    """Iteration n ran, its tokens reached the scheduler, its KV evaluation is
                    done and the worker carried out what the ledger approved."""
                    known = kv._known.get(iid)
                    return (
                        gate.iterations == n
                        and all(r.output_tokens == gate.produced.get(r.request_id, 0) for r in live)
                        and iid not in kv._tasks
                        and (known is None or worker.memory.applied.get(iid, 0) >= known[0])
                    )

                n = 0
                while not all(t.done() for t in tasks):
                    n += 1
                    gate.grant()
                    worker.device.wake()
                    await wait_until(
                        lambda n=n, tasks=tasks: settled(n) or all(t.done() for t in tasks),
                        what=f"iteration {n} settled",
                    )
                    assert n < 2000, "the requests never finished"
            finals = [await t for t in tasks]
            assert all(f.completion_tokens == 160 for f in finals), finals
            assert {f.instance_id for f in finals} == {iid}
            counts[w] = worker.memory.counters.resizes - base
            evaluations[w] = sum(kv.statuses.values()) - asked
            assert worker.memory.counters.peak_measured_bytes <= limit
        finally:
            await s.stop()
            etcd.stop()
    print("resizes by watermark", counts, "ScaleKV calls", evaluations)
    assert counts[0.0] > 0, "the growing demand resized the pool"
    assert counts[0.25] < counts[0.0], counts
