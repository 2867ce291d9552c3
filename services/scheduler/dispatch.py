"""The request path, assembled: views, cold starts, admission, relay, keep-alive.

For every request the dispatcher builds the policy's view (live_view.py) and carries out
`policy.decide` (admission.py): attach to an existing instance (busiest admissible,
shadow-validated), place a new one on the most loaded node that validates (a cold start,
cold_start.py), hand a paying preemption to the consolidator, or wait until the request's
deadline passes, then fail it with RESOURCE_EXHAUSTED (docs/API.md). The stream is relayed
from the worker to the client, and re-dispatched losslessly after a preemption (relay.py).
Idle instances are unloaded after their model's keep-alive (reclaim.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from slinfer.policy import DispatchView, InstanceView
from slinfer.services.cluster.live_view import label_of
from slinfer.services.cluster.state import ClusterWatcher
from slinfer.services.cluster.suspects import Suspects
from slinfer.services.cluster.tracker import LiveRequest, Tracker
from slinfer.services.cluster.workers import WorkerClients
from slinfer.services.common.engine_types import SamplingParams
from slinfer.services.common.records import ModelRecord
from slinfer.services.memory.client import MemoryClient
from slinfer.services.scheduler.admission import Admission, Placement
from slinfer.services.scheduler.cold_start import ColdStarts
from slinfer.services.scheduler.dispatch_config import DispatchConfig
from slinfer.services.scheduler.kv_scaler import KvScaler
from slinfer.services.scheduler.models import check_can_run
from slinfer.services.scheduler.reclaim import reclaim_idle
from slinfer.services.scheduler.relay import Relay
from slinfer.v1 import worker_pb2

__all__ = ["DispatchConfig", "Dispatcher", "Placement"]


class Dispatcher:
    def __init__(
        self,
        watcher: ClusterWatcher,
        workers: WorkerClients,
        config: DispatchConfig,
        suspects: Suspects | None = None,
        on_change: Callable[[str], None] = lambda _iid: None,
    ):
        self.watcher = watcher
        self.workers = workers
        self.config = config
        self.policy_config = config.policy
        self._on_change = on_change
        self.tracker = Tracker(prior_output_tokens=config.policy.prior_output_tokens)
        self.cold = ColdStarts(watcher, workers, config)
        self.kv = KvScaler(watcher, self.tracker, MemoryClient(watcher.store), config.policy)
        self.suspects = suspects or Suspects(watcher, workers)
        self.admission = Admission(
            watcher, self.tracker, self.cold, self.kv, config, self._changed, self.suspects
        )
        self.relay = Relay(
            self.admission,
            workers,
            self.tracker,
            self.cold,
            self.kv,
            config,
            self._changed,
            self.suspects,
        )
        self.views = self.admission.views
        self.preemption = self.admission.preemption

    # The budget writer (server.py) sets this after start: every change of an instance's
    # requests is reported here.
    @property
    def on_change(self) -> Callable[[str], None]:
        return self._on_change

    @on_change.setter
    def on_change(self, fn: Callable[[str], None]) -> None:
        self._on_change = fn

    def _changed(self, instance_id: str) -> None:
        self._on_change(instance_id)

    @property
    def last_used(self) -> dict[str, float]:
        return self.cold.last_used

    @property
    def waiting(self) -> int:
        return self.admission.waiting

    def dispatch_view(self, model: ModelRecord) -> DispatchView:
        return self.admission.dispatch_view(model)

    def instance_view(self, instance_id: str) -> InstanceView | None:
        view = self.watcher.view
        rec = view.instances.get(instance_id)
        if rec is None:
            return None
        return self.views.instance_view(
            view,
            self.tracker,
            rec,
            label_of(view, rec.node_id),
            {},
            self.config.default_kv_capacity_tokens,
        )

    def node_of(self, instance_id: str) -> str | None:
        return self.cold.node_of(instance_id)

    async def generate(
        self,
        model: ModelRecord,
        req: LiveRequest,
        prompt_ids: list[int],
        sampling: SamplingParams,
        resumed: tuple[int, ...] = (),
    ) -> AsyncIterator[tuple[Placement, worker_pb2.SubmitResponse]]:
        # Refuse at once what can never run (FAILED_PRECONDITION), rather than wait for
        # capacity that cannot come (docs/MEMORY.md, docs/RELIABILITY.md).
        check_can_run(
            self.watcher.view,
            model,
            self.config.default_kv_capacity_tokens,
            self.views.model_dir(model),
        )
        if self.kv.enabled:
            measured = self.views.measured(self.watcher.view, model)
            context = len(prompt_ids) + sampling.max_tokens
            self.kv.check_fits(model, self.views.model_dir(model), measured, context)
        stream = self.relay.generate(model, req, prompt_ids, sampling, resumed)
        async with contextlib.aclosing(stream):
            async for item in stream:
                yield item

    async def reclaim_idle(self, default_keep_alive_s: float, now: float) -> list[str]:
        """Unload ready instances idle past their model's keep-alive (reclaim.py)."""
        return await reclaim_idle(self, default_keep_alive_s, now)
