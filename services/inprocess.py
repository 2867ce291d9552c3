"""An in-process slinfer stack (real etcd, real gRPC, real engines) for tests and benches."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from slinfer import AsyncClient
from slinfer.services.consolidator.server import create as create_consolidator
from slinfer.services.memory.server import create as create_memory
from slinfer.services.scheduler.dispatch import DispatchConfig
from slinfer.services.scheduler.server import SchedulerConfig, SchedulerService
from slinfer.services.worker.server import WorkerConfig, WorkerService


@dataclass
class LiveStack:
    etcd: str
    scheduler: SchedulerService
    workers: list[WorkerService]
    others: list[Any] = field(default_factory=list)  # memory service, consolidator
    client: AsyncClient | None = None

    @classmethod
    async def start(
        cls,
        etcd: str,
        *,
        workers: list[dict[str, object]] | None = None,
        dispatch: DispatchConfig | None = None,
        keep_alive_s: float = 300.0,
        consolidator: dict[str, object] | None = None,
    ) -> LiveStack:
        worker_services = [
            WorkerService(WorkerConfig(etcd=etcd, **w))  # type: ignore[arg-type]
            for w in (workers or [{"node_id": "cpu-0", "memory_bytes": 2 << 30}])
        ]
        for w in worker_services:
            await w.start()
        scheduler = SchedulerService(cls.scheduler_config(etcd, dispatch, keep_alive_s))
        await scheduler.start()
        d = scheduler.config.dispatch
        others = [
            create_memory(etcd),
            # Same system and view settings as the scheduler (docs/CONSOLIDATION.md).
            create_consolidator(
                etcd,
                **{
                    "system": d.system,
                    "default_kv_capacity_tokens": d.default_kv_capacity_tokens,
                    "l_min_tokens": d.l_min_tokens,
                    **(consolidator or {}),
                },
            ),
        ]
        for o in others:
            await o.start()
        stack = cls(etcd, scheduler, worker_services, others)
        stack.client = AsyncClient(scheduler.address)
        # The scheduler sees the workers through its etcd watch.
        for _ in range(100):
            view = scheduler.watcher.view
            if len(view.nodes) >= len(worker_services) and "consolidator" in view.leaders:
                break
            await asyncio.sleep(0.05)
        return stack

    @staticmethod
    def scheduler_config(
        etcd: str, dispatch: DispatchConfig | None = None, keep_alive_s: float = 300.0
    ) -> SchedulerConfig:
        return SchedulerConfig(
            etcd=etcd,
            default_keep_alive_s=keep_alive_s,
            reclaim_every_s=0.5,
            dispatch=dispatch or DispatchConfig(default_kv_capacity_tokens=2048),
        )

    @property
    def c(self) -> AsyncClient:
        assert self.client is not None
        return self.client

    async def restart_scheduler(self) -> None:
        """Kill the scheduler and start a fresh one: all it knows must come from etcd."""
        old = self.scheduler
        await self.c.close()
        await old.stop(grace_s=0)
        self.scheduler = SchedulerService(old.config)
        await self.scheduler.start()
        self.client = AsyncClient(self.scheduler.address)

    async def stop(self) -> None:
        if self.client:
            await self.client.close()
        await self.scheduler.stop(grace_s=0)
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
