"""The cluster watch against a real etcd: a malformed record is skipped, the watch goes on.

The parsing edge itself is unit-tested in tests/test_etcd_records.py; here the value arrives
the way the services see it, through a list (start) and a watch event, and the loop must
neither stop nor fall back to listing again.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from slinfer.services.cluster.state import ClusterWatcher
from slinfer.services.common import keys
from slinfer.services.common.engine_types import EngineKind
from slinfer.services.common.etcd_process import EtcdProcess
from slinfer.services.common.records import InstanceRecord, InstanceState
from slinfer.services.common.store import Store

pytestmark = [pytest.mark.live, pytest.mark.asyncio(loop_scope="session")]

GOOD = InstanceRecord("m-1", "m", "cpu-0", InstanceState.LOADING, EngineKind.TORCH)
WAIT_S = 30.0  # an upper bound for a loaded machine; the waits return on the event


async def test_a_malformed_record_neither_stops_the_watch_nor_the_list(etcd: EtcdProcess) -> None:
    store = Store(etcd.endpoint)
    await store.connect()
    # In etcd before the watcher lists: skipped by the list.
    await store.put(keys.instance("m-0"), {**GOOD.to_etcd(), "instance_id": "m-0", "state": "?"})
    watcher = ClusterWatcher(store)
    await watcher.start()
    try:
        view = watcher.view
        assert "m-0" not in view.instances
        await store.put(keys.instance("m-1"), GOOD.to_etcd())
        assert await watcher.wait_for(lambda v: v.state_of("m-1") is InstanceState.LOADING, WAIT_S)

        # Through the watch: the record goes (it is no longer true), the next events apply.
        await store.put(keys.instance("m-1"), {**GOOD.to_etcd(), "kv_capacity_tokens": "lots"})
        await store.put(keys.instance("m-2"), replace(GOOD, instance_id="m-2").to_etcd())
        assert await watcher.wait_for(lambda v: "m-2" in v.instances, WAIT_S)
        assert "m-1" not in watcher.view.instances
        await store.put(keys.instance("m-1"), replace(GOOD, state=InstanceState.READY).to_etcd())
        assert await watcher.wait_for(lambda v: v.state_of("m-1") is InstanceState.READY, WAIT_S)
        assert watcher.view is view, "the watch went on: a relist would have built a new view"
        assert watcher._task is not None and not watcher._task.done()
    finally:
        await watcher.stop()
        await store.close()
