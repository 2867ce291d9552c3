"""The etcd view every service shares: JSON values, revisions on every read, guarded writes.

Reads return `Entry(value, mod_revision, create_revision)`. Writes that can race are
transactions guarded on `mod_revision` (or `create_revision == 0` for creation); losing such
a race is an answer (`False`), a store that cannot be reached is an error (`StoreUnavailable`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aetcd
import aetcd.exceptions
from loguru import logger
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from slinfer.services.common.errors import StoreUnavailable

T = TypeVar("T")

_TRANSIENT = (
    aetcd.exceptions.ConnectionFailedError,
    aetcd.exceptions.ConnectionTimeoutError,
    aetcd.exceptions.InternalError,
)


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    value: dict[str, Any]
    mod_revision: int
    create_revision: int
    lease: int | None


@dataclass(frozen=True, slots=True)
class WatchEvent:
    key: str
    value: dict[str, Any] | None  # None for a deletion
    mod_revision: int


def _entry(kv: Any) -> Entry:
    return Entry(
        key=kv.key.decode(),
        value=json.loads(kv.value) if kv.value else {},
        mod_revision=kv.mod_revision,
        create_revision=kv.create_revision,
        lease=kv.lease or None,
    )


def _encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


async def within(coro: Awaitable[T], seconds: float, what: str) -> T:
    """Await a store call for at most `seconds` (a client's call must not hang on etcd):
    StoreUnavailable (UNAVAILABLE) past it."""
    try:
        return await asyncio.wait_for(coro, seconds)
    except TimeoutError as exc:
        raise StoreUnavailable(
            f"etcd, the cluster's state store, did not answer {what} within {seconds:.0f} s; "
            "a change sent to it may still be applied when it answers again: check the state "
            "(e.g. `slinfer models`) and retry once etcd is back"
        ) from exc


class Store:
    """A thin asyncio etcd client for slinfer's JSON keys (aetcd underneath). With etcd
    authentication on, pass `user`/`password` (default: $SLINFER_ETCD_USER and
    $SLINFER_ETCD_PASSWORD)."""

    def __init__(
        self,
        endpoint: str,
        *,
        timeout_s: float = 5.0,
        retry_s: float = 15.0,
        user: str | None = None,
        password: str | None = None,
    ):
        host, _, port = endpoint.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"etcd endpoint must be host:port, got {endpoint!r}")
        self.endpoint = endpoint
        user = user if user is not None else os.environ.get("SLINFER_ETCD_USER") or None
        if password is None:
            password = os.environ.get("SLINFER_ETCD_PASSWORD") or None
            password_file = os.environ.get("SLINFER_ETCD_PASSWORD_FILE")
            if password is None and password_file:
                password = Path(password_file).read_text().strip()
        self._client = aetcd.Client(
            host=host,
            port=int(port),
            timeout=int(max(timeout_s, 1)),
            username=user,
            password=password if user else None,
        )
        self._retry_s = retry_s

    async def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_TRANSIENT),
                stop=stop_after_delay(self._retry_s),
                wait=wait_exponential(multiplier=0.1, max=2.0),
                reraise=True,
            ):
                with attempt:
                    return await fn(*args, **kwargs)
        except _TRANSIENT as exc:
            raise StoreUnavailable(
                f"etcd at {self.endpoint} unreachable during {what}: {exc}. "
                "Is etcd running? (`slinfer up` starts one)"
            ) from exc

    async def connect(self) -> None:
        await self._call("connect", self._client.connect)
        await self._call("status", self._client.status)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._client.close()

    async def get(self, key: str) -> Entry | None:
        kv = await self._call("get", self._client.get, key.encode())
        return _entry(kv) if kv is not None else None

    async def list(self, prefix: str) -> tuple[list[Entry], int]:
        """All entries under prefix and the store revision they were read at."""
        res = await self._call("list", self._client.get_prefix, prefix.encode())
        entries = [_entry(kv) for kv in res]
        return entries, res.header.revision

    async def put(self, key: str, value: dict[str, Any], *, lease: int | None = None) -> int:
        res = await self._call("put", self._client.put, key.encode(), _encode(value), lease=lease)
        return int(res.header.revision)

    async def create(self, key: str, value: dict[str, Any], *, lease: int | None = None) -> bool:
        """Write only if the key does not exist. False: somebody else created it first."""
        t = self._client.transactions
        ok, _ = await self._call(
            "create",
            self._client.transaction,
            compare=[t.create(key.encode()) == 0],
            success=[t.put(key.encode(), _encode(value), lease)],
            failure=[],
        )
        return bool(ok)

    async def update(
        self, key: str, value: dict[str, Any], mod_revision: int, *, lease: int | None = None
    ) -> bool:
        """Write only if the key is unchanged since mod_revision. False: lost the race."""
        t = self._client.transactions
        ok, _ = await self._call(
            "update",
            self._client.transaction,
            compare=[t.mod(key.encode()) == mod_revision],
            success=[t.put(key.encode(), _encode(value), lease)],
            failure=[],
        )
        return bool(ok)

    async def delete(self, key: str, mod_revision: int | None = None) -> bool:
        t = self._client.transactions
        compare = [] if mod_revision is None else [t.mod(key.encode()) == mod_revision]
        if not compare:
            res = await self._call("delete", self._client.delete, key.encode())
            return res is not None and bool(res.deleted)
        ok, _ = await self._call(
            "delete",
            self._client.transaction,
            compare=compare,
            success=[t.delete(key.encode())],
            failure=[],
        )
        return bool(ok)

    async def delete_prefix(self, prefix: str) -> int:
        res = await self._call("delete_prefix", self._client.delete_prefix, prefix.encode())
        return int(res.deleted) if res is not None else 0

    async def grant_lease(self, ttl_s: int) -> aetcd.Lease:
        return await self._call("lease", self._client.lease, ttl_s)

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        """Events under prefix from start_revision on (list + watch: pass the list's
        revision + 1 so nothing is missed between the two)."""
        watch = await self._call(
            "watch",
            self._client.watch_prefix,
            prefix.encode(),
            start_revision=start_revision,
        )
        try:
            async for event in watch:
                kv = event.kv
                value = json.loads(kv.value) if event.kind == "PUT" and kv.value else None
                yield WatchEvent(kv.key.decode(), value, kv.mod_revision)
        finally:
            with contextlib.suppress(Exception):
                await watch.cancel()


class Registration:
    """A key kept alive under its own lease: a worker's node, a service's presence.

    If the lease is lost (etcd restarted, a long pause), a new lease is granted and the key
    written again, so the registration heals by itself.
    """

    def __init__(
        self,
        store: Store,
        key: str,
        value: dict[str, Any],
        *,
        ttl_s: int = 10,
        on_renewed: Callable[[int], Awaitable[None]] | None = None,
    ):
        self.store, self.key, self.value, self.ttl_s = store, key, value, ttl_s
        self.lease: aetcd.Lease | None = None
        self._task: asyncio.Task[None] | None = None
        # Called with the new lease id after a lost lease was replaced, so keys that lived
        # under the old lease (a worker's instances) can be written again.
        self._on_renewed = on_renewed

    @property
    def lease_id(self) -> int:
        assert self.lease is not None, "registration not started"
        return int(self.lease.id)

    async def start(self) -> None:
        self.lease = await self.store.grant_lease(self.ttl_s)
        await self.store.put(self.key, self.value, lease=self.lease.id)
        self._task = asyncio.create_task(self._run(), name=f"lease:{self.key}")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                assert self.lease is not None
                res = await self.lease.refresh()
                if getattr(res, "TTL", 1) <= 0:
                    raise RuntimeError("lease expired")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the lease is gone or etcd is away: re-register
                logger.warning("lease for {} lost ({}); re-registering", self.key, exc)
                with contextlib.suppress(Exception):
                    await self.start_lease_again()

    async def start_lease_again(self) -> None:
        self.lease = await self.store.grant_lease(self.ttl_s)
        await self.store.put(self.key, self.value, lease=self.lease.id)
        logger.info("re-registered {}", self.key)
        if self._on_renewed is not None:
            await self._on_renewed(int(self.lease.id))

    async def update(self, value: dict[str, Any]) -> None:
        self.value = value
        assert self.lease is not None
        await self.store.put(self.key, value, lease=self.lease.id)

    async def stop(self, *, revoke: bool = True) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if revoke and self.lease is not None:
            with contextlib.suppress(Exception):
                await self.lease.revoke()
