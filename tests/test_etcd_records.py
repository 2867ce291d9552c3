"""Typed etcd records at the watch edge (services/common/records.py, cluster/state.py).

What the writers put into etcd parses back to the same record; an older writer's record,
without the fields added since, parses with the "not measured" defaults; a malformed value is
logged and left out of the cluster view, which stays usable.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from loguru import logger

from slinfer.policy import DeviceKind
from slinfer.services.cluster.state import ClusterView
from slinfer.services.common import keys
from slinfer.services.common.engine_types import EngineKind, WeightFormat
from slinfer.services.common.model_dir import FP32_BYTES, node_dtype_bytes
from slinfer.services.common.records import (
    InstanceRecord,
    InstanceState,
    MalformedRecord,
    ModelRecord,
    NodeRecord,
)
from slinfer.services.worker.instance import Instance
from slinfer.services.worker.node import NodeContext, WorkerConfig


def _through_etcd(value: dict[str, Any]) -> dict[str, Any]:
    """What a reader gets back: the store writes JSON (common/store.py)."""
    return json.loads(json.dumps(value, sort_keys=True))


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    seen: list[str] = []
    sink = logger.add(lambda m: seen.append(str(m)), level="WARNING", format="{message}")
    yield seen
    logger.remove(sink)


def test_the_writers_records_round_trip() -> None:
    node = NodeContext(WorkerConfig(etcd="127.0.0.1:1", node_id="cpu-0", memory_bytes=1 << 30))
    node.address = "127.0.0.1:5000"
    written = node.node_record()
    assert NodeRecord.from_etcd(_through_etcd(written.to_etcd())) == written
    assert written.kind is DeviceKind.CPU and written.dtype_bytes in (2, 4)

    inst = Instance("m-1", "m", "/models/m", EngineKind.TORCH, 256, state=InstanceState.READY)
    rec = inst.record("cpu-0")
    assert InstanceRecord.from_etcd(_through_etcd(rec.to_etcd()), 7) == replace(rec, mod_revision=7)

    model = ModelRecord(
        "m", "/models/m", EngineKind.VLLM, DeviceKind.GPU, 0.5, 0.1, 0.0, 4096, 2048, 32000,
        "LlamaForCausalLM", True, 1.7e9,
    )  # fmt: skip
    assert ModelRecord.from_etcd(_through_etcd(model.to_etcd())) == model
    auto = ModelRecord("m", "/models/m")  # engine, device, SLOs: the defaults apply (null)
    assert ModelRecord.from_etcd(_through_etcd(auto.to_etcd())) == auto
    int8 = replace(model, engine=EngineKind.OPENVINO, device=None, weights=WeightFormat.INT8)
    assert ModelRecord.from_etcd(_through_etcd(int8.to_etcd())) == int8
    quantized = Instance("m-2", "m", "/m", EngineKind.OPENVINO, 256, weights=WeightFormat.INT4)
    rec = quantized.record("cpu-0")
    assert rec.weights is WeightFormat.INT4 and rec.kv_block_tokens == 16  # no engine yet
    assert InstanceRecord.from_etcd(_through_etcd(rec.to_etcd())) == rec


def test_the_view_holds_typed_records_with_their_revisions() -> None:
    view = ClusterView()
    node = NodeRecord("cpu-0", "h:1", DeviceKind.CPU, 2, 1 << 30, "cpu-2t", dtype_bytes=2)
    inst = InstanceRecord("m-1", "m", "cpu-0", InstanceState.LOADING, EngineKind.TORCH)
    view.apply(keys.node("cpu-0"), node.to_etcd(), 11)
    view.apply(keys.instance("m-1"), inst.to_etcd(), 12)
    assert view.nodes["cpu-0"].label == "cpu-2t" and view.nodes["cpu-0"].mod_revision == 11
    assert view.state_of("m-1") is InstanceState.LOADING
    view.apply(keys.instance("m-1"), {**inst.to_etcd(), "state": "ready"}, 13)
    assert view.state_of("m-1") is InstanceState.READY
    assert view.instances_on("cpu-0") == [view.instances["m-1"]]
    assert view.nodes_in_use() == {"cpu-0"}
    view.apply(keys.instance("m-1"), None, 14)
    assert view.state_of("m-1") is None and not view.nodes_in_use()


def test_an_older_workers_records_parse_with_defaults() -> None:
    # A worker from before calibration: no dtype, ρ, ratio, load rate or overhead; and a
    # newer field this reader does not know, which is ignored.
    old_node = {
        "node_id": "cpu-0", "kind": "cpu", "address": "h:1", "cores": 4, "label": "cpu-4t",
        "memory_bytes": 1 << 30, "started_at": 1.0, "numa": 2,
    }  # fmt: skip
    node = NodeRecord.from_etcd(old_node)
    assert (node.prefill_share, node.perf_ratio, node.load_bytes_per_s) == (0.0, 1.0, 0.0)
    assert node.iteration_overhead_s == 0.0 and node.dtype_bytes is None
    assert node_dtype_bytes(node) == FP32_BYTES  # plans assume the widest dtype
    assert NodeRecord.from_etcd({"node_id": "g", "address": "h:2", "kind": "gpu"}).label == "gpu"

    old_inst = {
        "instance_id": "m-1", "node_id": "cpu-0", "model_id": "m", "engine": "torch",
        "state": "ready", "kv_capacity_tokens": 256, "weights_bytes": 1000,
    }  # fmt: skip
    inst = InstanceRecord.from_etcd(old_inst)
    assert inst.state is InstanceState.READY and inst.engine is EngineKind.TORCH
    assert (inst.kv_bytes_per_token, inst.kv_resizable, inst.loading_since) == (0, False, None)
    assert inst.footprint_bytes == 1000

    model = ModelRecord.from_etcd({"model_id": "m", "path": "/m", "engine": None})
    assert model.engine is None and model.device is None and model.tpot_slo_s is None


MALFORMED = {
    "unknown state": (keys.instance("m-1"), {"state": "warming"}, "state"),
    "wrong type": (keys.instance("m-1"), {"kv_capacity_tokens": "lots"}, "kv_capacity_tokens"),
    "bool for a number": (keys.instance("m-1"), {"weights_bytes": True}, "weights_bytes"),
    "missing node": (keys.instance("m-1"), {"node_id": None}, "node_id"),
    "unknown kind": (keys.node("cpu-0"), {"kind": "tpu"}, "kind"),
    "fractional bytes": (keys.node("cpu-0"), {"memory_bytes": 1.5}, "memory_bytes"),
    "bad engine": (keys.model("m"), {"engine": "onnx"}, "engine"),
}
RECORDS = {keys.NODES: NodeRecord, keys.INSTANCES: InstanceRecord, keys.MODELS: ModelRecord}


def _prefix(key: str) -> str:
    return key.rpartition("/")[0] + "/"


def _table(view: ClusterView, key: str) -> dict[str, Any]:
    tables = {keys.NODES: view.nodes, keys.INSTANCES: view.instances, keys.MODELS: view.models}
    return tables[_prefix(key)]  # type: ignore[return-value]


def _valid_view() -> tuple[ClusterView, dict[str, dict[str, Any]]]:
    values = {
        keys.node("cpu-0"): NodeRecord("cpu-0", "h:1", memory_bytes=1 << 30).to_etcd(),
        keys.node("cpu-1"): NodeRecord("cpu-1", "h:2", memory_bytes=1 << 30).to_etcd(),
        keys.instance("m-1"): InstanceRecord("m-1", "m", "cpu-0", InstanceState.READY).to_etcd(),
        keys.instance("m-2"): InstanceRecord("m-2", "m", "cpu-1", InstanceState.READY).to_etcd(),
        keys.model("m"): ModelRecord("m", "/m").to_etcd(),
    }
    view = ClusterView()
    for key, value in values.items():
        view.apply(key, value, 1)
    return view, values


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_record_is_skipped_with_a_warning(case: str, warnings: list[str]) -> None:
    key, change, field = MALFORMED[case]
    view, values = _valid_view()
    bad = {**values[key], **change}
    with pytest.raises(MalformedRecord, match=field):
        RECORDS[_prefix(key)].from_etcd(bad)

    view.apply(key, bad, 2)  # what the watch loop does with it: no exception

    name = keys.tail(key, _prefix(key))
    assert name not in _table(view, key), "what the key said before is no longer true"
    assert any(key in w and field in w for w in warnings), warnings
    # Everything else is still there and usable, and the key's next good value shows.
    for other in values.keys() - {key}:
        assert keys.tail(other, _prefix(other)) in _table(view, other)
    assert view.instances_of("m") and view.nodes_in_use()
    view.apply(key, values[key], 3)
    assert _table(view, key)[name].mod_revision == 3


def test_a_value_that_is_not_an_object_is_skipped(warnings: list[str]) -> None:
    view, _ = _valid_view()
    view.apply(keys.instance("m-1"), ["ready"], 2)  # type: ignore[arg-type]
    assert "m-1" not in view.instances and "m-2" in view.instances
    assert any("not an object" in w for w in warnings)


def test_a_model_with_the_same_files_uses_the_tables_measured_for_another_id() -> None:
    view = ClusterView()
    tables = {"prefill_ms": [[16, 5.0]], "decode_ms": [[64, [[1, 2.0]]]]}
    for mid, path, weights in (
        ("a", "/models/m", WeightFormat.AUTO),
        ("b", "/models/m", WeightFormat.AUTO),  # same files, engine and weights as a
        ("c", "/models/m", WeightFormat.INT4),  # same files, another weight format
        ("d", "/models/other", WeightFormat.AUTO),
    ):
        view.apply(keys.model(mid), ModelRecord(mid, path, weights=weights).to_etcd())
    assert view.profiles_of("b") == {}
    view.apply(keys.profile("a", "cpu-2t-x"), tables)
    assert view.profiles_of("a") == view.profiles_of("b") == {"cpu-2t-x": tables}
    assert view.profiles_of("c") == view.profiles_of("d") == {}
    own = {**tables, "prefill_ms": [[16, 9.0]]}
    view.apply(keys.profile("b", "cpu-2t-x"), own)
    assert view.profiles_of("b") == {"cpu-2t-x": own}, "a model's own tables come first"
