"""The HTTP front: an OpenAI-compatible API over the gateway's gRPC API (docs/API.md).

Stateless: every call becomes one gateway call; any number of replicas can serve at once.
`/health` says the process is alive, `/ready` that etcd and a gateway answer, `/metrics`
serves Prometheus text on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

from slinfer.services.http import metrics
from slinfer.services.http.errors import ApiError, from_grpc
from slinfer.services.http.gateway import GatewayClient, forwarded
from slinfer.services.http.generate import generate
from slinfer.services.http.ready import ReadinessProbe


@dataclass(frozen=True, slots=True)
class HttpConfig:
    etcd: str
    gateway: str = "127.0.0.1:50051"
    listen: str = "127.0.0.1:8000"
    tls_ca: str = ""  # the gateway serves TLS: trust this CA

    def __post_init__(self) -> None:
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--listen must be host:port, got {self.listen!r}")
        if not self.gateway:
            raise ValueError("--gateway is required (host:port of a scheduler)")


def _error(exc: ApiError, endpoint: str) -> JSONResponse:
    metrics.REQUESTS.labels(endpoint, str(exc.status)).inc()
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())


@dataclass
class _Clients:
    """The app's connections, opened and closed with its lifespan."""

    gateway: GatewayClient | None = None
    ready: ReadinessProbe | None = None

    def gw(self) -> GatewayClient:
        assert self.gateway is not None, "used outside the app's lifespan"
        return self.gateway

    def probe(self) -> ReadinessProbe:
        assert self.ready is not None, "used outside the app's lifespan"
        return self.ready


def create_app(config: HttpConfig) -> FastAPI:
    clients = _Clients()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        clients.gateway = GatewayClient(config.gateway, tls_ca=config.tls_ca)
        clients.ready = ReadinessProbe(config.etcd, clients.gateway)
        yield
        await clients.ready.close()
        await clients.gateway.close()

    app = FastAPI(title="slinfer", lifespan=lifespan, docs_url=None, redoc_url=None)
    gw = clients.gw

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        # The route's template, not the path: a model id must not become a label value.
        return _error(exc, getattr(request.scope.get("route"), "path", "other"))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return _error(ApiError(exc.status_code, message), "other")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        r = await clients.probe().check()
        body = {"ready": r.ready, "etcd": r.etcd, "gateway": r.gateway}
        return JSONResponse(body, status_code=200 if r.ready else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def models(request: Request) -> list[dict[str, object]]:
        try:
            infos = await gw().list_models(forwarded(request.headers))
        except grpc.aio.AioRpcError as exc:
            raise from_grpc(exc.code(), exc.details() or "", "model") from None
        return [
            {
                "id": m.model_id,
                "object": "model",
                "created": int(m.created_at),
                "owned_by": "slinfer",
                "root": m.path,
                "max_model_len": m.max_model_len,
            }
            for m in infos
        ]

    @app.get("/v1/models")
    async def list_models(request: Request) -> JSONResponse:
        data = await models(request)
        metrics.REQUESTS.labels("/v1/models", "200").inc()
        return JSONResponse({"object": "list", "data": data})

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> JSONResponse:
        found = [m for m in await models(request) if m["id"] == model_id]
        if not found:
            raise ApiError(
                404, f"model {model_id} is not deployed", param="model", code="model_not_found"
            )
        return JSONResponse(found[0])

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate(request, gw(), "completion")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await generate(request, gw(), "chat")

    return app


class _EmbeddedServer(uvicorn.Server):
    """Signals belong to the process's own handler (run_until_signal), not to uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield


class HttpService:
    def __init__(self, config: HttpConfig):
        self.config = config
        host, _, port = config.listen.rpartition(":")
        self._uv = _EmbeddedServer(
            uvicorn.Config(
                create_app(config),
                host=host,
                port=int(port),
                http="httptools",
                loop="none",  # the caller's running loop
                lifespan="on",
                access_log=False,
                log_level="warning",
                timeout_keep_alive=30,
            )
        )
        self._task: asyncio.Task[None] | None = None
        self.address = ""

    async def start(self) -> str:
        self._task = asyncio.create_task(self._uv.serve(), name="http")
        while not self._uv.started:
            if self._task.done():
                self._task.result()  # raises why it could not start (port in use, ...)
                raise RuntimeError(f"HTTP server on {self.config.listen} stopped at start")
            await asyncio.sleep(0.02)
        host, port = self._uv.servers[0].sockets[0].getsockname()[:2]
        self.address = f"{host}:{port}"
        logger.info(
            "HTTP API on http://{} (gateway {}, etcd {})",
            self.address,
            self.config.gateway,
            self.config.etcd,
        )
        return self.address

    async def stop(self, grace_s: float = 2.0) -> None:
        if self._task is None:
            return
        self._uv.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace_s + 1.0)
        except TimeoutError:
            self._uv.force_exit = True
            await self._task
