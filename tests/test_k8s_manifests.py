"""deploy/k8s validates offline against the Kubernetes schemas, and agrees with the code.

Every object is checked with `kubernetes-validate` (strict: unknown fields fail) against the
newest Kubernetes version it ships. The ServiceMonitor is a CRD that package does not know: it
is checked against tests/data/servicemonitor-v1.schema.json, a minimal schema written for the
fields slinfer uses (not the operator's generated CRD schema). Then the objects are checked
against the code: each slinfer container's args parse with its service's own argument parser,
ports named in args, probes and Services exist, every environment variable is one the code
reads, and the addresses in the ConfigMap name Services that serve them.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "deploy" / "k8s"
KUSTOMIZATIONS = [K8S, K8S / "overlays" / "gpu"]


def _resources(root: Path) -> list[dict[str, Any]]:
    kust = yaml.safe_load((root / "kustomization.yaml").read_text())
    out: list[dict[str, Any]] = []
    for entry in kust["resources"]:
        path = (root / entry).resolve()
        if path.is_dir():
            out += _resources(path)
        else:
            out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


OBJECTS = _resources(KUSTOMIZATIONS[-1])  # the GPU overlay holds the base and more


def _of(kind: str) -> list[dict[str, Any]]:
    return [o for o in OBJECTS if o["kind"] == kind]


def _one(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in _of(kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


WORKLOADS = [o for o in OBJECTS if o["kind"] in ("Deployment", "StatefulSet")]


def _containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(w, c) for w in WORKLOADS for c in w["spec"]["template"]["spec"]["containers"]]


def _service_of(container: dict[str, Any]) -> str | None:
    cmd = container.get("command", [])
    if cmd[:2] == ["python", "-m"] and cmd[2].startswith("slinfer.services."):
        return cmd[2].removeprefix("slinfer.services.")
    return None


def _env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment: its ConfigMaps and Secrets, then its own entries
    (fieldRefs become a placeholder pod name)."""
    env: dict[str, str] = {}
    for ref in container.get("envFrom", []):
        if "secretRef" in ref:
            env.update(_one("Secret", ref["secretRef"]["name"])["stringData"])
        else:
            env.update(_one("ConfigMap", ref["configMapRef"]["name"])["data"])
    for e in container.get("env", []):
        env[e["name"]] = e.get("value", "pod-0")
    return env


def _expand(text: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\(([A-Z_][A-Z0-9_]*)\)", lambda m: env[m.group(1)], text)


def _ports(container: dict[str, Any]) -> dict[str, int]:
    return {p.get("name", str(p["containerPort"])): p["containerPort"] for p in container["ports"]}


def _port(hostport: str) -> int:
    return int(hostport.rpartition(":")[2])


def _parsed(container: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The container's args as its service's own parser reads them (defaults from its env)."""
    env = _env(container)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    module = importlib.import_module(f"slinfer.services.{_service_of(container)}.__main__")
    return module.parser().parse_args([_expand(a, env) for a in container.get("args", [])])


def _env_read_by_code() -> set[str]:
    """Every environment variable name the code looks up (os.environ / os.getenv / click)."""
    names: set[str] = set()
    for root in ("services", "slinfer"):
        for path in (REPO / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call):
                    func = ast.unparse(node.func)
                    if func in ("os.environ.get", "os.getenv", "os.environ.pop") and node.args:
                        arg = node.args[0]
                        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                            names.add(arg.value)
                    for kw in node.keywords:
                        if kw.arg == "envvar" and isinstance(kw.value, ast.Constant):
                            names.add(kw.value.value)
                if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
                    if isinstance(node.slice, ast.Constant):
                        names.add(node.slice.value)
    return names


# ---- schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj", [o for o in OBJECTS if o["kind"] != "ServiceMonitor"], ids=lambda o: o["kind"]
)
def test_validates_against_the_kubernetes_schema(obj) -> None:
    version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(obj, version, strict=True)


def test_servicemonitor_validates_against_its_schema() -> None:
    schema = json.loads((REPO / "tests" / "data" / "servicemonitor-v1.schema.json").read_text())
    monitors = _of("ServiceMonitor")
    assert monitors
    for m in monitors:
        jsonschema.validate(m, schema)


def test_schema_check_catches_a_wrong_field() -> None:
    """The strict validation is not vacuous: a misspelt field fails."""
    bad = json.loads(json.dumps(_one("Deployment", "scheduler")))
    bad["spec"]["template"]["spec"]["containers"][0]["portz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, kubernetes_validate.latest_version(), strict=True)


def test_every_manifest_file_is_in_a_kustomization() -> None:
    listed: set[Path] = set()
    for root in KUSTOMIZATIONS:
        kust = yaml.safe_load((root / "kustomization.yaml").read_text())
        listed |= {(root / r).resolve() for r in kust["resources"]}
    files = {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert files <= listed, f"not in any kustomization: {sorted(map(str, files - listed))}"


# ---- agreement with the code -------------------------------------------------------------------


def test_the_shape_the_issue_asks_for() -> None:
    assert _one("StatefulSet", "etcd")["spec"]["replicas"] == 3
    for name in ("scheduler", "http", "memory", "consolidator"):
        assert _one("Deployment", name)["spec"]["replicas"] == 2, name
    cpu = _one("StatefulSet", "cpu-worker")["spec"]["template"]["spec"]["containers"][0]
    assert {"cpu", "memory"} <= set(cpu["resources"]["requests"])
    gpu = _one("StatefulSet", "gpu-worker")["spec"]["template"]["spec"]["containers"][0]
    assert int(gpu["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert _of("ServiceMonitor") and _of("ConfigMap")


def test_container_args_parse_and_ports_agree(monkeypatch) -> None:
    checked = set()
    for workload, c in _containers():
        service = _service_of(c)
        if service is None:
            continue
        ns = _parsed(c, monkeypatch)
        ports = _ports(c)
        listen = _port(ns.listen)
        if service == "http":  # HTTP and /metrics on one port
            assert ports["http"] == listen, workload["metadata"]["name"]
        else:
            assert ports["grpc"] == listen, workload["metadata"]["name"]
            assert ports["metrics"] == ns.metrics_port, workload["metadata"]["name"]
        checked.add(service)
    assert checked == {"scheduler", "memory", "consolidator", "http", "worker"}


def test_workers_advertise_their_headless_service_and_offer_what_they_request(monkeypatch) -> None:
    for workload, c in _containers():
        if _service_of(c) != "worker":
            continue
        ns = _parsed(c, monkeypatch)
        host, _, port = ns.advertise.rpartition(":")
        assert int(port) == _port(ns.listen)
        service = _one("Service", host.split(".", 1)[1])
        assert service["spec"].get("clusterIP") == "None"
        assert workload["spec"]["serviceName"] == service["metadata"]["name"]
        assert ns.node_id == _env(c)["POD_NAME"], "node id is the pod's name"
        resources = c["resources"]
        if ns.kind == "cpu":  # (a GPU node's --memory is the GPU's)
            assert ns.cores == int(resources["requests"]["cpu"]) == ns.threads
            limit = _bytes(resources["limits"]["memory"])
            assert ns.memory < limit, "the node offers less than its memory limit"
        else:
            assert int(resources["limits"]["nvidia.com/gpu"]) == 1, "one node per GPU"


def _bytes(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
    m = re.fullmatch(r"(\d+)([KMGT]i)?", quantity)
    assert m, quantity
    return int(m.group(1)) * units.get(m.group(2) or "", 1)


def test_probes_point_at_ports_and_paths_that_exist() -> None:
    from slinfer.services.http.server import HttpConfig, create_app

    http_routes = {r.path for r in create_app(HttpConfig(etcd="etcd:2379")).routes}
    for workload, c in _containers():
        ports = _ports(c)
        for kind in ("readinessProbe", "livenessProbe"):
            probe = c.get(kind)
            assert probe, f"{workload['metadata']['name']} has no {kind}"
            if "grpc" in probe:
                assert probe["grpc"]["port"] in ports.values()
            else:
                port = probe["httpGet"]["port"]
                assert port in ports or port in ports.values()
                if _service_of(c) == "http":
                    assert probe["httpGet"]["path"] in http_routes
    http = next(c for _, c in _containers() if _service_of(c) == "http")
    assert http["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert http["livenessProbe"]["httpGet"]["path"] == "/health"


def test_services_select_pods_and_target_their_ports() -> None:
    for svc in _of("Service"):
        selector = svc["spec"]["selector"]
        pods = [
            w
            for w in WORKLOADS
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert pods, f"Service {svc['metadata']['name']} selects no pods"
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            for w in pods:
                names = {**_ports(w["spec"]["template"]["spec"]["containers"][0])}
                assert target in names or target in names.values(), (svc["metadata"], target)


def test_servicemonitor_scrapes_every_metrics_service() -> None:
    monitor = _of("ServiceMonitor")[0]["spec"]
    scraped_ports = {e["port"] for e in monitor["endpoints"]}
    selected = [
        s
        for s in _of("Service")
        if monitor["selector"]["matchLabels"].items() <= s["metadata"].get("labels", {}).items()
    ]
    names = {s["metadata"]["name"] for s in selected}
    assert {"scheduler", "memory", "consolidator", "http", "cpu-worker", "gpu-worker"} <= names
    for s in selected:
        assert scraped_ports & {p["name"] for p in s["spec"]["ports"]}, s["metadata"]["name"]


def test_environment_variables_are_ones_the_code_reads() -> None:
    read = _env_read_by_code()
    assert {"SLINFER_ETCD", "SLINFER_GATEWAY", "SLINFER_METRICS_ADDR"} <= read
    for cm in _of("ConfigMap"):
        unknown = set(cm["data"]) - read
        assert not unknown, f"ConfigMap {cm['metadata']['name']} sets {unknown}: nothing reads it"
    for secret in _of("Secret"):
        unknown = set(secret["stringData"]) - read
        assert not unknown, f"Secret {secret['metadata']['name']} sets {unknown}: nothing reads it"
    for workload, c in _containers():
        text = " ".join(c.get("command", []) + c.get("args", []))
        for e in c.get("env", []):
            used = e["name"] in read or f"$({e['name']})" in text
            assert used, f"{workload['metadata']['name']}: {e['name']} is neither read nor used"


def test_configured_addresses_name_services_that_serve_them(monkeypatch) -> None:
    config = _one("ConfigMap", "slinfer-config")["data"]
    etcd_host, _, etcd_port = config["SLINFER_ETCD"].rpartition(":")
    svc = _one("Service", etcd_host)
    assert int(etcd_port) in {p["port"] for p in svc["spec"]["ports"]}
    etcd = _one("StatefulSet", "etcd")
    args = etcd["spec"]["template"]["spec"]["containers"][0]["command"]
    flags = dict(a.split("=", 1) for a in args if a.startswith("--"))
    assert _port(flags["--listen-client-urls"]) == int(etcd_port)
    members = flags["--initial-cluster"].split(",")
    assert len(members) == etcd["spec"]["replicas"]
    assert all(f".{etcd['spec']['serviceName']}:" in m for m in members)
    gw_host, _, gw_port = config["SLINFER_GATEWAY"].rpartition(":")
    scheduler = _one("Service", gw_host)
    assert scheduler["spec"]["selector"]["app.kubernetes.io/name"] == "scheduler"
    assert int(gw_port) in {p["port"] for p in scheduler["spec"]["ports"]}
    http = next(c for _, c in _containers() if _service_of(c) == "http")
    ns = _parsed(http, monkeypatch)
    assert ns.gateway == config["SLINFER_GATEWAY"] and ns.etcd == config["SLINFER_ETCD"]


def test_volumes_and_config_references_exist() -> None:
    claims = {c["metadata"]["name"] for c in _of("PersistentVolumeClaim")}
    maps = {c["metadata"]["name"] for c in _of("ConfigMap")}
    secrets = {c["metadata"]["name"] for c in _of("Secret")}
    for workload in WORKLOADS:
        spec = workload["spec"]["template"]["spec"]
        for v in spec.get("volumes", []):
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims
        for c in spec["containers"]:
            for ref in c.get("envFrom", []):
                if "secretRef" in ref:
                    assert ref["secretRef"]["name"] in secrets
                else:
                    assert ref["configMapRef"]["name"] in maps
