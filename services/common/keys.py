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


def lease(node_id: str, instance_id: str) -> str:
    return f"{LEASES}{node_id}/{instance_id}"


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


def tail(key: str, prefix: str) -> str:
    """The id part of a key under a prefix."""
    return key[len(prefix) :]
