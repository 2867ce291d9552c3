"""`slinfer up --detach` as a user runs it: real processes, the CLI, grpcurl, /metrics, down."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from slinfer.services.common.etcd_process import free_port

pytestmark = pytest.mark.live

BIN = Path(sys.executable).parent
# Generous SLOs: these tests are about the CLI, not admission on a busy machine (the default
# 0.5 s TTFT SLO is refused when this machine's measured tables say it cannot be met).
SLO_FLAGS = ("--ttft-slo", "60", "--tpot-slo", "5")


@pytest.fixture(scope="module")
def cli_stack(tmp_path_factory, tiny_models):
    home = tmp_path_factory.mktemp("slinfer-home")
    ports = {
        name: free_port()
        for name in ("gateway", "etcd", "memory", "consolidator", "worker", "http")
    }
    metrics_base = free_port() // 100 * 100 - 1000
    env = {
        **os.environ,
        "SLINFER_HOME": str(home),
        "SLINFER_GATEWAY": f"127.0.0.1:{ports['gateway']}",
        # The venv's `slinfer` script may come from another checkout: test this one.
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")) if p
        ),
    }
    up = subprocess.run(
        [
            BIN / "slinfer",
            "up",
            "--detach",
            "--gateway-port",
            str(ports["gateway"]),
            "--etcd-port",
            str(ports["etcd"]),
            "--memory-port",
            str(ports["memory"]),
            "--consolidator-port",
            str(ports["consolidator"]),
            "--worker-port",
            str(ports["worker"]),
            "--http-port",
            str(ports["http"]),
            "--metrics-base",
            str(metrics_base),
            "--worker-memory",
            "1GiB",
            "--schedulers",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert up.returncode == 0, up.stderr
    # Authentication is on: `up` made an admin key for the CLI (and the SDK) to find.
    key = (home / "api_key").read_text().strip()
    assert key.startswith("sk-slinfer-")
    env["TEST_API_KEY"] = key
    try:
        yield env, ports, metrics_base
    finally:
        down = subprocess.run(
            [BIN / "slinfer", "down"], env=env, capture_output=True, text=True, timeout=60
        )
        assert down.returncode == 0, down.stderr
        assert not (home / "run" / "stack.json").exists()
        assert not (home / "api_key").exists(), "the key died with the stack's etcd"


def _run(env, *args, timeout=120):
    return subprocess.run(
        [BIN / "slinfer", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_cli_deploy_generate_models_status(cli_stack, tiny_models) -> None:
    env, _ports, _ = cli_stack
    res = _run(env, "deploy", "tiny", str(tiny_models["llama"]), *SLO_FLAGS)
    assert res.returncode == 0, res.stderr
    res = _run(env, "generate", "tiny", "Hello", "--raw", "--max-tokens", "8", "--temperature", "0")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip(), "no text streamed"
    assert "TTFT" in res.stderr
    res = _run(env, "models")
    assert res.returncode == 0 and "tiny" in res.stdout
    res = _run(env, "status")
    assert res.returncode == 0 and "cpu-0" in res.stdout and "ready" in res.stdout
    bad = _run(env, "generate", "missing-model", "hi")
    assert bad.returncode == 2 and "NOT_FOUND" in bad.stderr
    # The second gateway replica serves the same cluster.
    second = f"127.0.0.1:{int(env['SLINFER_GATEWAY'].rsplit(':', 1)[1]) + 4}"
    res = _run(env, "--gateway", second, "generate", "tiny", "Hi", "--raw", "--max-tokens", "2")
    assert res.returncode == 0, res.stderr
    res = _run(env, "status")
    assert res.stdout.count("scheduler/") == 2, res.stdout


def test_cli_keys_and_tenants(cli_stack, tiny_models) -> None:
    env, _ports, _ = cli_stack
    res = _run(env, "keys", "create", "acme", "--name", "ci", "--max-models", "1")
    assert res.returncode == 0, res.stderr
    acme = res.stdout.strip()
    key_id = acme.removeprefix("sk-slinfer-").split("-")[0]
    listed = _run(env, "keys", "list")
    assert listed.returncode == 0 and key_id in listed.stdout and "acme" in listed.stdout
    assert acme not in listed.stdout, "a key is shown once, when it is made"
    as_acme = {**env, "SLINFER_API_KEY": acme}
    res = _run(as_acme, "deploy", "acme-tiny", str(tiny_models["llama"]))
    assert res.returncode == 0, res.stderr
    res = _run(as_acme, "models")
    assert "acme-tiny" in res.stdout and "\ntiny " not in res.stdout
    res = _run(as_acme, "status")
    assert res.returncode == 2 and "PERMISSION_DENIED" in res.stderr
    res = _run(as_acme, "deploy", "acme-two", str(tiny_models["llama"]))
    assert res.returncode == 2 and "RESOURCE_EXHAUSTED" in res.stderr, res.stderr
    nokey = {**env, "SLINFER_API_KEY": "sk-slinfer-nope-nope"}
    res = _run(nokey, "models")
    assert res.returncode == 2 and "UNAUTHENTICATED" in res.stderr
    assert _run(env, "keys", "revoke", key_id).returncode == 0
    res = _run(as_acme, "models")
    assert res.returncode == 2 and "UNAUTHENTICATED" in res.stderr
    assert _run(env, "delete", "acme-tiny").returncode == 0  # the admin may


def test_grpcurl_lists_services_and_calls_list_models(cli_stack) -> None:
    env, ports, _ = cli_stack
    grpcurl = BIN / "grpcurl"
    addr = f"127.0.0.1:{ports['gateway']}"
    listed = subprocess.run(
        [grpcurl, "-plaintext", addr, "list"], capture_output=True, text=True, timeout=30
    )
    assert listed.returncode == 0, listed.stderr
    services = listed.stdout.split()
    assert "slinfer.v1.Gateway" in services and "grpc.health.v1.Health" in services
    anonymous = subprocess.run(
        [grpcurl, "-plaintext", addr, "slinfer.v1.Gateway/ListModels"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert anonymous.returncode != 0 and "Unauthenticated" in anonymous.stderr
    auth = f"authorization: Bearer {env['TEST_API_KEY']}"
    call = subprocess.run(
        [grpcurl, "-plaintext", "-H", auth, addr, "slinfer.v1.Gateway/ListModels"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert call.returncode == 0, call.stderr
    body = json.loads(call.stdout)
    assert "models" in body and isinstance(body["models"], list)
    worker = f"127.0.0.1:{ports['worker']}"
    listed = subprocess.run(
        [grpcurl, "-plaintext", worker, "list"], capture_output=True, text=True, timeout=30
    )
    assert "slinfer.v1.Worker" in listed.stdout.split()


def test_every_service_exposes_metrics(cli_stack, tiny_models) -> None:
    env, ports, base = cli_stack
    _run(env, "deploy", "tiny", str(tiny_models["llama"]))  # ALREADY_EXISTS is fine
    res = _run(env, "generate", "tiny", "metrics please", "--raw", "--max-tokens", "4",
               "--temperature", "0")  # fmt: skip
    assert res.returncode == 0, res.stderr
    body = json.dumps({"model": "tiny", "prompt": "over HTTP", "max_tokens": 2}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{ports['http']}/v1/completions",
        data=body,
        headers={"content-type": "application/json",
                 "authorization": f"Bearer {env['TEST_API_KEY']}"},  # fmt: skip
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        assert json.loads(r.read())["usage"]["completion_tokens"] >= 1
    pages = {}
    for name, offset in (("scheduler", 1), ("memory", 2), ("consolidator", 3), ("worker", 11)):
        with urllib.request.urlopen(f"http://127.0.0.1:{base + offset}/metrics", timeout=5) as r:
            pages[name] = r.read().decode()
    with urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/metrics", timeout=5) as r:
        pages["http"] = r.read().decode()
    assert re.search(
        r'slinfer:request_success_total\{finished_reason="(stop|length)",model_name="tiny"\}',
        pages["scheduler"],
    )
    for histogram in ("time_to_first_token_seconds", "e2e_request_latency_seconds"):
        assert f'slinfer:{histogram}_bucket{{le="+Inf",model_name="tiny"}}' in pages["scheduler"]
    assert 'slinfer:instances{node="cpu-0"}' in pages["scheduler"]
    assert 'slinfer:nodes{kind="cpu"} 1.0' in pages["scheduler"]
    assert "slinfer:worker_batch_size_bucket" in pages["worker"]
    # The worker's level gauges refresh every second: wait for one refresh at most.
    deadline = time.monotonic() + 10
    while 'slinfer:kv_cache_usage_perc{model_name="tiny"}' not in pages["worker"]:
        assert time.monotonic() < deadline, "kv_cache_usage_perc never appeared"
        time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{base + 11}/metrics", timeout=5) as r:
            pages["worker"] = r.read().decode()
    assert 'slinfer:ledger_bytes{kind="planned",node="cpu-0"}' in pages["memory"]
    assert "slinfer:http_requests_total" in pages["http"]
    assert "process_resident_memory_bytes" in pages["memory"]
    assert "process_resident_memory_bytes" in pages["consolidator"]


def test_cli_and_grpcurl_drive_the_consolidator(cli_stack, tiny_models) -> None:
    env, ports, _ = cli_stack
    env = {**env, "SLINFER_CONSOLIDATOR": f"127.0.0.1:{ports['consolidator']}"}
    _run(env, "deploy", "tiny", str(tiny_models["llama"]), *SLO_FLAGS)
    res = _run(env, "generate", "tiny", "Hello", "--raw", "--max-tokens", "2")
    assert res.returncode == 0, res.stderr
    grpcurl = BIN / "grpcurl"
    addr = f"127.0.0.1:{ports['consolidator']}"
    listed = subprocess.run(
        [grpcurl, "-plaintext", addr, "list"], capture_output=True, text=True, timeout=30
    )
    assert "slinfer.v1.Consolidator" in listed.stdout.split(), listed.stderr
    status = _run(env, "status")
    instance = next(w for w in status.stdout.split() if w.startswith("tiny-"))
    res = _run(env, "preempt", instance)
    assert res.returncode == 0 and "done" in res.stdout, res.stdout + res.stderr
    missing = _run(env, "preempt", "no-such-instance")
    assert missing.returncode == 2 and "NOT_FOUND" in missing.stderr
    res = _run(env, "drain", "cpu-0", "--timeout", "30")
    assert res.returncode == 0 and "drain" in res.stdout, res.stdout + res.stderr
    call = subprocess.run(
        [
            grpcurl,
            "-plaintext",
            "-H",
            f"authorization: Bearer {env['TEST_API_KEY']}",
            "-d",
            '{"node_id": "cpu-0", "undo": true}',
            addr,
            "slinfer.v1.Consolidator/Drain",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert call.returncode == 0, call.stderr
    assert json.loads(call.stdout)["executed"] is True
    res = _run(env, "plans")
    assert res.returncode == 0, res.stderr
    assert "preempt (operator)" in res.stdout and "undrain" in res.stdout
    res = _run(env, "generate", "tiny", "Hello", "--raw", "--max-tokens", "2")
    assert res.returncode == 0, "the node takes work again after undo"


def test_top_once_shows_nodes_instances_slices_batch_kv_and_requests(cli_stack, tiny_models):
    """`slinfer top --once` renders one frame while a request streams through the HTTP API."""
    import httpx

    env, ports, _ = cli_stack
    # Its own model id, with SLOs a loaded machine meets: this test is about the view.
    res = _run(env, "deploy", "top-m", str(tiny_models["llama"]), "--ttft-slo", "60",
               "--tpot-slo", "5")  # fmt: skip
    assert res.returncode == 0, res.stderr
    body = {
        "model": "top-m",
        "prompt": "Count:",
        "max_tokens": 1900,
        "ignore_eos": True,
        "temperature": 0,
        "stream": True,
    }
    url = f"http://127.0.0.1:{ports['http']}/v1/completions"
    auth = {"authorization": f"Bearer {env['TEST_API_KEY']}"}
    anonymous = httpx.post(url, json={**body, "stream": False, "max_tokens": 1}, timeout=60)
    assert anonymous.status_code == 401, "the HTTP API takes the same keys"
    with httpx.stream("POST", url, json=body, headers=auth, timeout=120) as resp:
        assert resp.status_code == 200, resp.read()
        lines = resp.iter_lines()
        assert next(line for line in lines if line.startswith("data: {"))  # decoding now
        frame = _run(env, "top", "--once", timeout=60)
        still = next(line for line in lines if line.startswith("data: "))
        assert '"finish_reason":null' in still, "the request must still run during the frame"
    assert frame.returncode == 0, frame.stderr
    out = frame.stdout
    assert "nodes" in out and "instances" in out
    node = next(line for line in out.splitlines() if line.lstrip("│ ").startswith("cpu-0"))
    assert " cpu " in node and " up " in node
    row = next(line for line in out.splitlines() if "top-m-" in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    _iid, model, node_id, state, time_slice, batch, running, waiting, kv, *_ = cells
    assert (model, node_id, state) == ("top-m", "cpu-0", "ready")
    # The one request is in the engine: running, or waiting while the OpenVINO engine
    # rebuilds its pool for a KV resize (docs/OPENVINO.md); the frame shows what it reports.
    assert time_slice.endswith("%") and batch == "1"
    assert (int(running), int(waiting)) in ((1, 0), (0, 1))
    used, cap = (int(x) for x in kv.split("/"))
    assert 0 < used <= cap
    assert re.search(r"requests: 0 waiting, 1 running", out)
