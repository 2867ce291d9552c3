"""The Gateway's unary calls: models (tenant-scoped), cluster status and API keys (admin).

A tenant sees, deploys, deletes and calls only its own models; another tenant's model is
NOT_FOUND, as if it did not exist (model ids are one namespace: deploying an id another
tenant holds is ALREADY_EXISTS). Cluster status and key management need the admin role.
Every etcd call here is bounded (`store.within`): with etcd unreachable the caller gets
UNAVAILABLE, not a hang.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import grpc
from loguru import logger

from slinfer.services.common import auth, keys
from slinfer.services.common.auth import Principal, Role, TenantLimits
from slinfer.services.common.errors import LimitExceeded, ModelNotFound, status_of, trailers_of
from slinfer.services.common.store import within
from slinfer.services.scheduler import models
from slinfer.services.scheduler.status import cluster_status
from slinfer.v1 import gateway_pb2, worker_pb2

if TYPE_CHECKING:
    from slinfer.services.scheduler.server import SchedulerService

STORE_WAIT_S = 5.0
_ROLES = {gateway_pb2.ROLE_ADMIN: Role.ADMIN, gateway_pb2.ROLE_USER: Role.USER}
_ROLES_PB = {Role.ADMIN: gateway_pb2.ROLE_ADMIN, Role.USER: gateway_pb2.ROLE_USER}


async def abort(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    code, message = status_of(exc)
    if code == grpc.StatusCode.INTERNAL:
        logger.opt(exception=exc).error("gateway call failed: {}", exc)
    context.set_trailing_metadata(trailers_of(exc))
    await context.abort(code, message)


def _key_info(record: dict[str, Any]) -> gateway_pb2.KeyInfo:
    return gateway_pb2.KeyInfo(
        key_id=str(record.get("key_id", "")),
        tenant=str(record.get("tenant", "")),
        role=_ROLES_PB.get(Role(record.get("role", "user")), 0),
        name=str(record.get("name", "")),
        created_at=float(record.get("created_at", 0.0)),
    )


class GatewayCalls:
    def __init__(self, s: SchedulerService):
        self.s = s

    def _principal(self, context: grpc.aio.ServicerContext) -> Principal:
        return self.s.auth.principal(context.invocation_metadata())

    async def DeployModel(self, request, context):  # noqa: N802
        try:
            principal = self._principal(context)
            view = self.s.watcher.view
            limit = TenantLimits.of(view.tenants.get(principal.tenant)).max_models
            owned = sum(1 for m in view.models.values() if auth.tenant_of(m) == principal.tenant)
            if limit is not None and owned >= limit:
                raise LimitExceeded(
                    f"tenant {principal.tenant} has {owned} models deployed, its limit; "
                    "delete one first, or ask an admin to raise max_models"
                )
            spec = replace(models.spec_from_request(request), tenant=principal.tenant)
            models.check_can_run(view, spec, self.s.config.dispatch.default_kv_capacity_tokens)
            await within(models.deploy(self.s.store, spec), STORE_WAIT_S, "the deploy")
            # Read-your-writes: the watch event may trail the answer to this call.
            self.s.watcher.view.apply(keys.model(spec.model_id), spec.to_etcd())
            logger.info(
                "deployed model={} path={} tenant={}", spec.model_id, spec.path, principal.tenant
            )
            return gateway_pb2.DeployModelResponse(
                model=models.model_info(spec, 0, self.s.defaults)
            )
        except Exception as exc:
            await abort(context, exc)

    async def DeleteModel(self, request, context):  # noqa: N802
        try:
            principal = self._principal(context)
            spec = self.s.watcher.view.models.get(request.model_id)
            if spec is not None and not principal.owns(spec):
                raise ModelNotFound(f"model {request.model_id} is not deployed (see ListModels)")
            unloaded = await within(
                self.delete_model(request.model_id, principal), STORE_WAIT_S * 4, "the delete"
            )
            return gateway_pb2.DeleteModelResponse(instances_unloaded=unloaded)
        except Exception as exc:
            await abort(context, exc)

    async def ListModels(self, request, context):  # noqa: N802
        try:
            principal = self._principal(context)
        except Exception as exc:
            await abort(context, exc)
        view = self.s.watcher.view
        infos = [
            models.model_info(spec, len(view.instances_of(mid)), self.s.defaults)
            for mid, spec in sorted(view.models.items())
            if principal.owns(spec)
        ]
        return gateway_pb2.ListModelsResponse(models=infos)

    async def GetClusterStatus(self, request, context):  # noqa: N802
        try:
            self._principal(context).require_admin("the cluster status")
            return await cluster_status(self.s.watcher.view, self.s.workers, self.s.active)
        except Exception as exc:
            await abort(context, exc)

    # ---- keys (admin) -----------------------------------------------------------------------

    async def CreateKey(self, request, context):  # noqa: N802
        try:
            self._principal(context).require_admin("creating API keys")
            key, record = await within(
                auth.create_key(
                    self.s.store,
                    request.tenant,
                    _ROLES.get(request.role, Role.USER),
                    request.name,
                    TenantLimits(
                        request.max_concurrent_requests or None, request.max_models or None
                    ),
                ),
                STORE_WAIT_S,
                "the new key",
            )
            self.s.watcher.view.apply(keys.api_key(record["key_id"]), record)
            return gateway_pb2.CreateKeyResponse(key=key, info=_key_info(record))
        except Exception as exc:
            await abort(context, exc)

    async def ListKeys(self, request, context):  # noqa: N802
        try:
            self._principal(context).require_admin("listing API keys")
            records = await within(
                auth.list_keys(self.s.store, request.tenant), STORE_WAIT_S, "the key list"
            )
            return gateway_pb2.ListKeysResponse(keys=[_key_info(r) for r in records])
        except Exception as exc:
            await abort(context, exc)

    async def RevokeKey(self, request, context):  # noqa: N802
        try:
            self._principal(context).require_admin("revoking API keys")
            revoked = await within(
                auth.revoke_key(self.s.store, request.key_id), STORE_WAIT_S, "the revocation"
            )
            if revoked:
                self.s.watcher.view.apply(keys.api_key(request.key_id), None)
            return gateway_pb2.RevokeKeyResponse(revoked=revoked)
        except Exception as exc:
            await abort(context, exc)

    # ---- helpers ----------------------------------------------------------------------------

    async def delete_model(self, model_id: str, principal: Principal) -> int:
        s = self.s
        spec = await models.delete(s.store, model_id, principal)
        s.watcher.view.apply(keys.model(model_id), None)
        if spec is not None:
            s.prompts.forget(spec.path)
        unloaded = 0
        view = s.watcher.view
        for inst in view.instances_of(model_id):
            node = view.nodes.get(inst.node_id)
            if node is None:
                continue
            with contextlib.suppress(grpc.aio.AioRpcError):
                await s.workers.stub(node.address).UnloadInstance(
                    worker_pb2.UnloadInstanceRequest(instance_id=inst.instance_id),
                    timeout=s.config.dispatch.rpc_timeout_s,
                )
                unloaded += 1
        logger.info("deleted model={} unloaded={}", model_id, unloaded)
        return unloaded
