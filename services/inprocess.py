"""An in-process slinfer stack (real etcd, real gRPC, real engines) for tests and benches.

It runs insecure (no authentication) on loopback unless given a `Security`: tests of
authentication pass one with a cluster token and make API keys themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from slinfer import AsyncClient
from slinfer.services.common.security import INSECURE, Security
from slinfer.services.consolidator.server import create as create_consolidator
from slinfer.services.memory.server import create as create_memory
from slinfer.services.scheduler.dispatch import DispatchConfig
from slinfer.services.scheduler.server import SchedulerConfig, SchedulerService
from slinfer.services.worker.server import WorkerConfig, WorkerService

START_TIMEOUT_S = 60.0  # generous: the machine may be busy with other work


@dataclass
class LiveStack:
    etcd: str
    scheduler: SchedulerService
    workers: list[WorkerService]
    others: list[Any] = field(default_factory=list)  # memory service, consolidator
    client: AsyncClient | None = None
    replicas: list[SchedulerService] = field(default_factory=list)  # more gateways
    api_key: str | None = None  # the client's key when authentication is on

    @classmethod
    async def start(
        cls,
        etcd: str,
        *,
        workers: list[dict[str, object]] | None = None,
        dispatch: DispatchConfig | None = None,
        keep_alive_s: float = 300.0,
        consolidator: dict[str, object] | None = None,
        schedulers: int = 1,
        security: Security = INSECURE,
    ) -> LiveStack:
        worker_services = [
            WorkerService(WorkerConfig(etcd=etcd, **{"security": security, **w}))  # type: ignore[arg-type]
            for w in (workers or [{"node_id": "cpu-0", "memory_bytes": 2 << 30}])
        ]
        for w in worker_services:
            await w.start()
        config = cls.scheduler_config(etcd, dispatch, keep_alive_s, security)
        scheduler = SchedulerService(config)
        await scheduler.start()
        replicas = [SchedulerService(config) for _ in range(schedulers - 1)]
        for r in replicas:
            await r.start()
        d = scheduler.config.dispatch
        others = [
            create_memory(etcd, security=security),
            # Same system and view settings as the scheduler (docs/CONSOLIDATION.md).
            create_consolidator(
                etcd,
                **{
                    "system": d.system,
                    "default_kv_capacity_tokens": d.default_kv_capacity_tokens,
                    "security": security,
                    **(consolidator or {}),
                },
            ),
        ]
        for o in others:
            await o.start()
        stack = cls(etcd, scheduler, worker_services, others, replicas=replicas)
        stack.client = stack.new_client()
        # The scheduler sees the workers and the consolidator's leader through its etcd watch.
        ready = await scheduler.watcher.wait_for(
            lambda view: len(view.nodes) >= len(worker_services) and "consolidator" in view.leaders,
            timeout_s=START_TIMEOUT_S,
        )
        if not ready:
            await stack.stop()
            raise RuntimeError(
                f"the scheduler did not see {len(worker_services)} workers and a consolidator "
                f"leader within {START_TIMEOUT_S:.0f} s"
            )
        return stack

    @staticmethod
    def scheduler_config(
        etcd: str,
        dispatch: DispatchConfig | None = None,
        keep_alive_s: float = 300.0,
        security: Security = INSECURE,
    ) -> SchedulerConfig:
        return SchedulerConfig(
            etcd=etcd,
            default_keep_alive_s=keep_alive_s,
            reclaim_every_s=0.5,
            dispatch=dispatch or DispatchConfig(default_kv_capacity_tokens=2048),
            security=security,
        )

    def new_client(self, api_key: str | None = None, **kw: Any) -> AsyncClient:
        """A client of every gateway replica (the first answers; the others take over)."""
        addresses = [self.scheduler.address, *(r.address for r in self.replicas)]
        return AsyncClient(addresses, api_key=api_key or self.api_key, **kw)

    @property
    def c(self) -> AsyncClient:
        assert self.client is not None
        return self.client

    async def restart_scheduler(self) -> None:
        """Kill the scheduler and start a fresh one: all it knows must come from etcd."""
        old = self.scheduler
        await self.c.close()
        await old.stop(grace_s=0)
        self.scheduler = SchedulerService(replace(old.config))
        await self.scheduler.start()
        self.client = self.new_client()

    async def stop(self) -> None:
        if self.client:
            await self.client.close()
        for s in [self.scheduler, *self.replicas]:
            await s.stop(grace_s=0)
        for w in self.workers:  # before the memory service: unloads release through it
            await w.stop(grace_s=0)
        for o in self.others:
            await o.stop(grace_s=0)

    def engine_of(self, instance_id: str):  # noqa: ANN201
        for w in self.workers:
            inst = w.instances.get(instance_id)
            if inst is not None:
                return inst.engine
        raise KeyError(instance_id)
