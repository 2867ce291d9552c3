"""Every etcd key slinfer uses is built here (DESIGN.md §1, suggested layout).

Values are JSON objects. Keys under a node's lease vanish when the node's worker dies.
"""

from __future__ import annotations

import re

ROOT = "/slinfer/"

NODES = ROOT + "nodes/"
MODELS = ROOT + "models/"
INSTANCES = ROOT + "instances/"
LEASES = ROOT + "leases/"
MEMORY = ROOT + "memory/"
SERVICES = ROOT + "services/"
ELECTION = ROOT + "election/"
PROFILES = ROOT + "profiles/"
DRAIN = ROOT + "drain/"
POLICY = ROOT + "policy"  # the PolicyConfig the schedulers decide with (JSON)
OUTPUTS = ROOT + "outputs/"  # per model: completed requests' output lengths (Ō, DESIGN.md §3)
API_KEYS = ROOT + "keys/"  # per key id: its tenant, role and hash (never the key itself)
TENANTS = ROOT + "tenants/"  # per tenant: its limits
REQUESTS = ROOT + "requests/"  # per tenant and request id: the scheduler streaming it

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def valid_name(name: str) -> bool:
    """Model, node and instance ids: 1-64 of [A-Za-z0-9._-], starting alphanumeric."""
    return bool(_NAME.match(name))


def node(node_id: str) -> str:
    return NODES + node_id


def model(model_id: str) -> str:
    return MODELS + model_id


def instance(instance_id: str) -> str:
    return INSTANCES + instance_id


def lease(node_id: str, instance_id: str, scheduler_id: str) -> str:
    """A scheduler's token-budget lease on one instance (one per scheduler replica)."""
    return f"{LEASES}{node_id}/{instance_id}/{scheduler_id}"


def node_leases(node_id: str) -> str:
    """Prefix of the token-budget leases of one node's instances."""
    return f"{LEASES}{node_id}/"


def profile(model_id: str, label: str) -> str:
    """Measured prefill/decode tables of a model on one hardware label (no lease: they
    outlive the instance that measured them)."""
    return f"{PROFILES}{model_id}/{label}"


def memory(node_id: str) -> str:
    return MEMORY + node_id


def service(kind: str, service_id: str) -> str:
    return f"{SERVICES}{kind}/{service_id}"


def election(kind: str) -> str:
    return ELECTION + kind


def drain(node_id: str) -> str:
    """A node marked draining by the consolidator: placement and routing skip it."""
    return DRAIN + node_id


def outputs(model_id: str) -> str:
    """A model's tally of completed output lengths, shared by every scheduler (Ō)."""
    return OUTPUTS + model_id


def api_key(key_id: str) -> str:
    return API_KEYS + key_id


def tenant(name: str) -> str:
    return TENANTS + name


def request(tenant_name: str, request_id: str) -> str:
    """Which scheduler streams a tenant's request (duplicates refused across replicas)."""
    return f"{REQUESTS}{tenant_name}/{request_id}"


def tail(key: str, prefix: str) -> str:
    """The id part of a key under a prefix."""
    return key[len(prefix) :]
