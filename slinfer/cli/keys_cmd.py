"""`slinfer keys create/list/revoke`: API keys and tenants (docs/RELIABILITY.md).

Through the gateway with an admin key (the one `slinfer up` made, or `--api-key`); with
`--etcd HOST:PORT` directly in etcd instead, to make the first admin key of a cluster that
has none (whoever can write etcd owns the cluster anyway).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import click
from rich.table import Table

from slinfer.cli.output import client, console, fail, out
from slinfer.client import SlinferError

etcd_option = click.option(
    "--etcd",
    default=None,
    help="Write to this etcd (host:port) directly instead of asking the gateway (bootstrap).",
)


@click.group()
def keys() -> None:
    """API keys: each belongs to a tenant; admins may do everything."""


@keys.command("create")
@click.argument("tenant")
@click.option("--admin", is_flag=True, help="An admin key (cluster operations, all tenants).")
@click.option("--name", default="", help="A label: who or what uses the key.")
@click.option("--max-concurrent", type=int, default=0, help="Tenant limit: requests at once.")
@click.option("--max-models", type=int, default=0, help="Tenant limit: models deployed.")
@etcd_option
@click.pass_context
def create(
    ctx: click.Context,
    tenant: str,
    admin: bool,
    name: str,
    max_concurrent: int,
    max_models: int,
    etcd: str | None,
) -> None:
    """Make a key for TENANT; prints it once (only its hash is stored)."""
    if etcd:
        from slinfer.services.common.auth import Role, TenantLimits, create_key

        limits = TenantLimits(max_concurrent or None, max_models or None)
        role = Role.ADMIN if admin else Role.USER
        key, record = _in_etcd(etcd, lambda store: create_key(store, tenant, role, name, limits))
        key_id = record["key_id"]
    else:
        try:
            with client(ctx) as c:
                resp = c.create_key(
                    tenant, admin=admin, name=name, max_concurrent_requests=max_concurrent,
                    max_models=max_models,
                )  # fmt: skip
        except SlinferError as exc:
            fail(exc)
        key, key_id = resp.key, resp.info.key_id
    console.print(f"key {key_id} for tenant {tenant} ({'admin' if admin else 'user'}):")
    out.print(key, soft_wrap=True)


@keys.command("list")
@click.option("--tenant", default="", help="Only this tenant's keys.")
@etcd_option
@click.pass_context
def list_(ctx: click.Context, tenant: str, etcd: str | None) -> None:
    """Keys (never their secrets): id, tenant, role, name, age."""
    rows: list[tuple[str, str, str, str, float]] = []
    if etcd:
        from slinfer.services.common.auth import list_keys

        for r in _in_etcd(etcd, lambda store: list_keys(store, tenant)):
            rows.append((r["key_id"], r["tenant"], r["role"], r.get("name", ""), r["created_at"]))
    else:
        try:
            with client(ctx) as c:
                infos = c.list_keys(tenant)
        except SlinferError as exc:
            fail(exc)
        roles = {1: "user", 2: "admin"}
        rows = [(k.key_id, k.tenant, roles.get(k.role, "?"), k.name, k.created_at) for k in infos]
    table = Table("key id", "tenant", "role", "name", "age")
    now = time.time()
    for key_id, ten, role, name, created in rows:
        table.add_row(key_id, ten, role, name, f"{now - created:.0f}s")
    out.print(table)


@keys.command("revoke")
@click.argument("key_id")
@etcd_option
@click.pass_context
def revoke(ctx: click.Context, key_id: str, etcd: str | None) -> None:
    """Revoke a key at once (every gateway sees it through its etcd watch)."""
    if etcd:
        from slinfer.services.common.auth import revoke_key

        done = _in_etcd(etcd, lambda store: revoke_key(store, key_id))
    else:
        try:
            with client(ctx) as c:
                done = c.revoke_key(key_id)
        except SlinferError as exc:
            fail(exc)
    if not done:
        console.print(f"[yellow]no key {key_id}[/yellow]")
        sys.exit(1)
    console.print(f"revoked {key_id}")


def _in_etcd(endpoint: str, fn: Any) -> Any:
    from slinfer.services.common.store import Store

    async def run() -> Any:
        store = Store(endpoint)
        await store.connect()
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(run())
