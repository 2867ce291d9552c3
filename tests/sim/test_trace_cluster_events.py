"""Trace selection, cluster description and event ordering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slinfer.policy.model_spec import GIB
from slinfer.policy.types import DeviceKind
from slinfer.sim.cluster import cluster_from_dict, default_cluster
from slinfer.sim.events import EventQueue, Phase
from slinfer.sim.paths import default_trace, load_profiles, shared_dir
from slinfer.sim.trace import TraceError, group_size_of, load_trace, select_functions


def test_shared_dir_is_next_to_the_repo_or_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (shared_dir() / "DESIGN.md").exists()
    monkeypatch.setenv("SLINFER_SHARED", "/elsewhere")
    assert shared_dir() == Path("/elsewhere")


def test_first_k_of_each_group_of_eight() -> None:
    chosen = select_functions(128, 32, 8)
    assert len(chosen) == 32
    assert chosen[:4] == (0, 1, 8, 9)
    assert select_functions(128, 128, 8) == tuple(range(128))
    assert select_functions(100, 10, 1) == tuple(range(10))
    with pytest.raises(TraceError):
        select_functions(128, 40, 8)


def test_group_size_from_file_name() -> None:
    assert group_size_of(Path("azure_1_30_128_8_0.json"), 128) == 8
    assert group_size_of(Path("azure_1_30_100_1_0.json"), 100) == 1


def test_load_trace_duration_and_rate_scale() -> None:
    full = load_trace(default_trace())
    assert full.models == 128 and len(full.requests) == 9266
    short = load_trace(default_trace(), models=32, duration_s=120.0)
    assert short.models == 32
    assert all(r.arrival_s <= 120.0 for r in short.requests)
    assert [r.index for r in short.requests] == list(range(len(short.requests)))
    fast = load_trace(default_trace(), models=32, duration_s=120.0, rate_scale=2.0)
    assert len(fast.requests) == len(short.requests)
    assert fast.requests[-1].arrival_s == pytest.approx(short.requests[-1].arrival_s / 2)
    assert fast.duration_s == pytest.approx(60.0)


def test_bad_trace(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(TraceError):
        load_trace(bad)


def test_default_cluster_matches_the_artifact() -> None:
    profile = load_profiles()
    cluster = default_cluster("7b", profile)
    gpus = [n for n in cluster.nodes if n.kind is DeviceKind.GPU]
    cpus = [n for n in cluster.nodes if n.kind is DeviceKind.CPU]
    assert len(gpus) == len(cpus) == 4
    assert gpus[0].slots == 4 and cpus[0].slots == 2
    assert gpus[0].memory_bytes == int((78 - 1.5 * 4) * GIB)
    assert cpus[0].memory_bytes == 256 * GIB
    assert cluster.load_s(DeviceKind.GPU, 20 * GIB) == pytest.approx(1.0)
    assert cluster.load_s(DeviceKind.CPU, 20 * GIB) == 0.0
    assert default_cluster("13b", profile).nodes[-1].slots == 2


def test_cluster_from_json_description() -> None:
    data = {
        "nodes": [{"kind": "gpu", "count": 2, "slots": 3}, {"kind": "cpu", "label": "cpu"}],
        "gpu_load_gbps": 10,
        "keep_alive_gpu_s": 5,
    }
    cluster = cluster_from_dict(data, "3b", load_profiles())
    assert [n.node_id for n in cluster.nodes] == ["gpu0", "gpu1", "cpu0"]
    assert cluster.nodes[0].memory_bytes == int((78 - 4.5) * GIB)
    assert cluster.keep_alive.gpu_s == 5.0
    assert cluster.load_s(DeviceKind.GPU, 10 * GIB) == pytest.approx(1.0)


def test_event_order_is_time_then_phase_then_insertion() -> None:
    q = EventQueue()
    q.push(2.0, Phase.ARRIVAL, "late")
    q.push(1.0, Phase.SAMPLE, "sample")
    q.push(1.0, Phase.ARRIVAL, "arrival-1")
    q.push(1.0, Phase.GRANT_DONE, "grant")
    q.push(1.0, Phase.ARRIVAL, "arrival-2")
    order = [q.pop()[3] for _ in range(len(q))]
    assert order == ["grant", "arrival-1", "arrival-2", "sample", "late"]
