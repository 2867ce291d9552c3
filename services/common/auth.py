"""API keys, tenants and roles (docs/RELIABILITY.md, "Tenants and keys").

A key is `sk-slinfer-<key_id>-<secret>`. Only `sha256(key_id:secret)` is stored, at
`/slinfer/keys/{key_id}` with the key's tenant, role and name; the key itself is shown once,
when it is made. Every key belongs to one tenant: a tenant lists, deploys, deletes and calls
only its own models (another tenant's model is NOT_FOUND, as if it did not exist). The admin
role may do everything, including cluster operations (status, drain, preempt) and key
management. A tenant's limits (concurrent requests, deployed models) live at
`/slinfer/tenants/{tenant}`.

With `--insecure` (loopback only) every caller is the admin of tenant `default`.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slinfer.services.common import keys
from slinfer.services.common.errors import InvalidArgument, PermissionDenied, Unauthenticated
from slinfer.services.common.security import bearer
from slinfer.services.common.store import Store

KEY_PREFIX = "sk-slinfer-"
DEFAULT_TENANT = "default"


class Role(enum.Enum):
    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    role: Role
    key_id: str = ""  # "" in insecure mode

    @property
    def admin(self) -> bool:
        return self.role is Role.ADMIN

    def owns(self, record: Any) -> bool:
        """May this caller see and use a model (a record with a `tenant`)? A record that
        could not be read is the admin's alone."""
        if record is None:
            return self.admin
        return self.admin or tenant_of(record) == self.tenant

    def require_admin(self, what: str) -> None:
        if not self.admin:
            raise PermissionDenied(
                f"{what} is a cluster operation: it needs an admin key (this key belongs to "
                f"tenant {self.tenant} with role {self.role.value})"
            )


INSECURE_PRINCIPAL = Principal(DEFAULT_TENANT, Role.ADMIN)


@dataclass(frozen=True, slots=True)
class TenantLimits:
    max_concurrent_requests: int | None = None
    max_models: int | None = None

    @classmethod
    def of(cls, record: Mapping[str, Any] | None) -> TenantLimits:
        record = record or {}
        return cls(
            int(record["max_concurrent_requests"])
            if record.get("max_concurrent_requests")
            else None,
            int(record["max_models"]) if record.get("max_models") else None,
        )


def tenant_of(record: Any) -> str:
    """The tenant of a model record (or an etcd value with a `tenant` field)."""
    tenant = record.get("tenant") if isinstance(record, Mapping) else record.tenant
    return str(tenant or DEFAULT_TENANT)


def key_hash(key_id: str, secret: str) -> str:
    return hashlib.sha256(f"{key_id}:{secret}".encode()).hexdigest()


def split_key(key: str) -> tuple[str, str] | None:
    if not key.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = key[len(KEY_PREFIX) :].partition("-")
    if not sep or not key_id or not secret:
        return None
    return key_id, secret


def principal_of_key(records: Mapping[str, Mapping[str, Any]], key: str) -> Principal | None:
    """The principal a key authenticates, or None (unknown, malformed or revoked)."""
    parts = split_key(key)
    if parts is None:
        return None
    key_id, secret = parts
    record = records.get(key_id)
    if record is None or not hmac.compare_digest(
        str(record.get("hash", "")), key_hash(key_id, secret)
    ):
        return None
    try:
        role = Role(record.get("role", Role.USER.value))
    except ValueError:
        return None
    return Principal(str(record.get("tenant") or DEFAULT_TENANT), role, key_id)


class Authenticator:
    """Who is calling: resolved from the request's bearer key against the keys in the
    caller's etcd view (`ClusterView.api_keys`, kept current by its watch)."""

    def __init__(self, records: Any, insecure: bool) -> None:
        self._records = records  # callable returning the key id -> record mapping
        self.insecure = insecure

    def principal(self, metadata: Any) -> Principal:
        if self.insecure:
            return INSECURE_PRINCIPAL
        key = bearer(metadata)
        if not key:
            raise Unauthenticated(
                "this call needs `authorization: Bearer <API key>` metadata (`slinfer keys "
                "create` makes a key; the SDK and CLI read $SLINFER_API_KEY)"
            )
        principal = principal_of_key(self._records(), key)
        if principal is None:
            raise Unauthenticated("the API key is unknown or revoked")
        return principal

    def valid(self, key: str) -> bool:
        return principal_of_key(self._records(), key) is not None

    def valid_admin(self, key: str) -> bool:
        principal = principal_of_key(self._records(), key)
        return principal is not None and principal.admin


# ---- key management (the gateway's CreateKey/ListKeys/RevokeKey, `slinfer keys`) ----------


def _check_tenant(tenant: str) -> None:
    if not keys.valid_name(tenant):
        raise InvalidArgument(
            f"tenant {tenant!r} is invalid: use 1-64 of [A-Za-z0-9._-], starting with a letter "
            "or digit"
        )


async def create_key(
    store: Store,
    tenant: str,
    role: Role = Role.USER,
    name: str = "",
    limits: TenantLimits | None = None,
) -> tuple[str, dict[str, Any]]:
    """A new key for `tenant`: (the key, shown once; its stored record, without a secret)."""
    _check_tenant(tenant)
    if len(name) > 128:
        raise InvalidArgument("key names are at most 128 characters")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(24)
    record = {
        "key_id": key_id,
        "tenant": tenant,
        "role": role.value,
        "name": name,
        "hash": key_hash(key_id, secret),
        "created_at": time.time(),
    }
    if limits is not None and (limits.max_concurrent_requests or limits.max_models):
        await set_limits(store, tenant, limits)
    if not await store.create(keys.api_key(key_id), record):
        raise InvalidArgument("key id collision; try again")
    return f"{KEY_PREFIX}{key_id}-{secret}", record


async def set_limits(store: Store, tenant: str, limits: TenantLimits) -> None:
    _check_tenant(tenant)
    for value in (limits.max_concurrent_requests, limits.max_models):
        if value is not None and value < 0:
            raise InvalidArgument("tenant limits must be >= 0 (0: unchanged)")
    entry = await store.get(keys.tenant(tenant))
    current = dict(entry.value) if entry is not None else {"tenant": tenant}
    if limits.max_concurrent_requests:
        current["max_concurrent_requests"] = limits.max_concurrent_requests
    if limits.max_models:
        current["max_models"] = limits.max_models
    await store.put(keys.tenant(tenant), current)


async def list_keys(store: Store, tenant: str = "") -> list[dict[str, Any]]:
    entries, _ = await store.list(keys.API_KEYS)
    out = [
        {k: v for k, v in e.value.items() if k != "hash"}
        for e in entries
        if not tenant or e.value.get("tenant") == tenant
    ]
    return sorted(out, key=lambda r: (r.get("tenant", ""), r.get("created_at", 0.0)))


async def revoke_key(store: Store, key_id: str) -> bool:
    if not key_id or "/" in key_id:
        raise InvalidArgument("key_id is required (see `slinfer keys list`)")
    return await store.delete(keys.api_key(key_id))
