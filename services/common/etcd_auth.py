"""`python -m slinfer.services.common.etcd_auth`: turn etcd authentication on (compose's init).

Idempotent: makes the secrets the cluster shares if they are missing — the etcd root password
and the services' cluster token, each in a file of `--secrets` (mode 0600) — then adds etcd's
`root` user with that password (role `root`) and enables authentication. Run it again and it
finds both done. The services then read `SLINFER_ETCD_USER=root`,
`SLINFER_ETCD_PASSWORD_FILE` and `SLINFER_CLUSTER_TOKEN_FILE` (docs/RELIABILITY.md).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
from pathlib import Path

import grpc
from aetcd import rpc

ETCD_PASSWORD = "etcd.password"
CLUSTER_TOKEN = "cluster.token"


def ensure_secret(path: Path) -> str:
    """The secret in `path`, made (random, 0600) if the file does not exist yet."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


async def enable_auth(endpoint: str, password: str) -> bool:
    """Add root (if absent) and enable authentication; False if it was on already."""
    async with grpc.aio.insecure_channel(endpoint) as channel:
        auth = rpc.AuthStub(channel)
        try:
            await auth.UserAdd(rpc.AuthUserAddRequest(name="root", password=password), timeout=10)
            await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"))
        except grpc.aio.AioRpcError as exc:
            details = exc.details() or ""
            if "already exists" in details:
                pass
            elif "user name is empty" in details or "not capable" in details:
                return False  # authentication is on already: nothing to do
            else:
                raise
        try:
            await auth.AuthEnable(rpc.AuthEnableRequest(), timeout=10)
        except grpc.aio.AioRpcError as exc:
            if "user name is empty" in (exc.details() or ""):
                return False
            raise
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m slinfer.services.common.etcd_auth", description=__doc__
    )
    parser.add_argument("--etcd", default=os.environ.get("SLINFER_ETCD", "127.0.0.1:2379"))
    parser.add_argument("--secrets", type=Path, default=Path("/secrets"))
    ns = parser.parse_args()
    ensure_secret(ns.secrets / CLUSTER_TOKEN)
    password = ensure_secret(ns.secrets / ETCD_PASSWORD)
    changed = asyncio.run(enable_auth(ns.etcd, password))
    print("etcd authentication " + ("enabled" if changed else "was already on"))


if __name__ == "__main__":
    main()
