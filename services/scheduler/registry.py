"""The requests a gateway replica is streaming, by caller: ids, duplicates, tenant limits.

Request ids are the caller's: they are scoped to its tenant, so another tenant's request
with the same id is another request. A second request with the id of one still streaming is
refused with ALREADY_EXISTS and the first is not touched, on this replica (exactly) and on
the others (through a claim at `/slinfer/requests/{tenant}/{id}` under this replica's etcd
lease; best effort: while etcd cannot be reached in time, requests are not held up for it).
A `resume` of a request takes it over instead: the stream it continues broke.

Internally every submission gets its own id (`internal_id`): an abort or a lease for one can
never touch another, whoever chose the client-facing id.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from slinfer.services.common import keys
from slinfer.services.common.auth import Principal, TenantLimits
from slinfer.services.common.errors import AlreadyExists, InvalidArgument, LimitExceeded
from slinfer.services.common.store import Store

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
CLAIM_TIMEOUT_S = 1.0
TAKEOVER_WAIT_S = 5.0


def check_request_id(rid: str) -> None:
    if not _REQUEST_ID.match(rid):
        raise InvalidArgument(
            f"request_id {rid[:40]!r}{'...' if len(rid) > 40 else ''} is invalid: use 1-128 of "
            "[A-Za-z0-9._:-] (or leave it empty for the gateway to choose one)"
        )


def internal_id(tenant: str, rid: str) -> str:
    """The id a submission carries to the workers and the leases: unique per submission."""
    return f"{tenant}:{rid}:{uuid.uuid4().hex[:8]}"


def client_id(internal: str) -> str:
    """The caller's request id inside an `internal_id`."""
    return internal.split(":", 1)[1].rsplit(":", 1)[0]


@dataclass
class _Held:
    task: asyncio.Task[Any] | None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    taken_over: bool = False  # a resume took the id: its claim is the new holder's


class RequestRegistry:
    def __init__(
        self,
        store: Store,
        scheduler_id: str,
        lease_id: Callable[[], int | None],
        tenants: Callable[[], Mapping[str, Mapping[str, Any]]],
    ) -> None:
        self.store, self.scheduler_id = store, scheduler_id
        self._lease_id, self._tenants = lease_id, tenants
        self._held: dict[tuple[str, str], _Held] = {}
        self.per_tenant: Counter[str] = Counter()
        self._releases: set[asyncio.Task[None]] = set()

    def streaming(self, tenant: str, rid: str) -> bool:
        return (tenant, rid) in self._held

    def holds(self, internal: str) -> bool:
        """Is `internal` (an `internal_id`, perhaps another replica's) a submission of a
        request this replica streams now? A resumed request's earlier submission, listed by
        its dead replica's lease until that lease expires, is not another request."""
        tenant, _, rest = internal.partition(":")
        return (tenant, rest.rpartition(":")[0]) in self._held

    @contextlib.asynccontextmanager
    async def hold(self, principal: Principal, rid: str, resume: bool) -> AsyncIterator[None]:
        """Hold (tenant, rid) while the request streams; refuse a duplicate, take over for a
        resume, enforce the tenant's concurrent-request limit."""
        key = (principal.tenant, rid)
        existing = self._held.get(key)
        if existing is not None:
            if not resume:
                raise AlreadyExists(
                    f"request {rid} is already streaming; choose another request_id (a broken "
                    "stream continues with `resume`, which the SDK sends by itself)"
                )
            existing.taken_over = True
            if existing.task is not None:
                existing.task.cancel()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(existing.done.wait(), TAKEOVER_WAIT_S)
        limit = TenantLimits.of(self._tenants().get(principal.tenant)).max_concurrent_requests
        if limit is not None and self.per_tenant[principal.tenant] >= limit:
            raise LimitExceeded(
                f"tenant {principal.tenant} has {limit} requests streaming, its limit; wait "
                "for one to finish, or ask an admin to raise max_concurrent_requests"
            )
        await self._claim(principal.tenant, rid, resume)
        held = self._held[key] = _Held(asyncio.current_task())
        self.per_tenant[principal.tenant] += 1
        try:
            yield
        finally:
            held.done.set()
            if self._held.get(key) is held:
                del self._held[key]
            if not held.taken_over:
                self._release(principal.tenant, rid)
            self.per_tenant[principal.tenant] -= 1

    async def _claim(self, tenant: str, rid: str, resume: bool) -> None:
        lease = self._lease_id()
        if lease is None:
            return
        key, value = keys.request(tenant, rid), {"scheduler": self.scheduler_id}
        try:
            if resume:
                await asyncio.wait_for(self.store.put(key, value, lease=lease), CLAIM_TIMEOUT_S)
                return
            if await asyncio.wait_for(self.store.create(key, value, lease=lease), CLAIM_TIMEOUT_S):
                return
            entry = await asyncio.wait_for(self.store.get(key), CLAIM_TIMEOUT_S)
        except (TimeoutError, Exception) as exc:  # etcd away: the local check stands
            logger.debug("request claim {} not checked across replicas: {}", key, exc)
            return
        if entry is not None and entry.value.get("scheduler") != self.scheduler_id:
            raise AlreadyExists(
                f"request {rid} is already streaming (on another gateway replica); choose "
                "another request_id"
            )

    def _release(self, tenant: str, rid: str) -> None:
        async def _delete() -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.store.delete(keys.request(tenant, rid)), 5.0)

        if self._lease_id() is None:
            return
        task = asyncio.get_running_loop().create_task(_delete(), name=f"release:{rid}")
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)
