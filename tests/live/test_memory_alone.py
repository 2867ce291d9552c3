"""A worker with no memory service registered checks loads against measured memory (the
node's `limit` from tests/live/conftest.py)."""

from __future__ import annotations

import pytest

from slinfer.services.common.errors import NoCapacity
from slinfer.services.common.etcd_process import start_etcd
from slinfer.services.common.security import INSECURE
from slinfer.services.worker.server import WorkerConfig, WorkerService
from slinfer.v1 import worker_pb2

pytestmark = [pytest.mark.live, pytest.mark.asyncio(loop_scope="session")]


async def test_without_a_memory_service_the_worker_checks_measured_memory(
    tiny_models, profile_dir, limit
):
    """No memory service registered: loads are checked against measured free memory, as
    before the service existed, and nothing waits for a ledger."""
    etcd = start_etcd()
    worker = WorkerService(
        WorkerConfig(etcd=etcd.endpoint, node_id="alone-0", memory_bytes=limit, num_threads=1,
                     profile_dir=profile_dir, security=INSECURE)
    )  # fmt: skip
    await worker.start()
    try:
        path = str(tiny_models["llama"])
        req = worker_pb2.LoadInstanceRequest(
            instance_id="solo", model_id="tiny", path=path, kv_capacity_tokens=1024
        )
        inst, _ = await worker.lifecycle.load(req)
        assert inst.stats.kv_capacity_tokens == 1024
        assert worker.stats().node.memory_ledger_bytes == 0  # no ledger: no estimate
        too_big = worker_pb2.LoadInstanceRequest(
            instance_id="big", model_id="tiny", path=path, kv_capacity_tokens=4096
        )
        with pytest.raises(NoCapacity, match="MiB free"):
            await worker.lifecycle.load(too_big)
        assert "big" not in worker.instances
        assert worker.memory_used_bytes() <= limit
    finally:
        await worker.stop()
        etcd.stop()
