"""The Python SDK: `Client` (blocking) and `AsyncClient` (asyncio) for the Gateway API.

    from slinfer import Client
    with Client("127.0.0.1:50051") as c:
        for event in c.generate("smollm2", "What is the capital of France?", max_tokens=32):
            if isinstance(event, Chunk):
                print(event.text, end="", flush=True)

Give several gateway addresses (replicas) and a call that fails with UNAVAILABLE moves to the
next one (tenacity, bounded). A `generate` whose stream breaks mid-way (its gateway replica
died) is resumed on another replica with every token it received (`resume`): the stream goes
on with no text lost or repeated (docs/RELIABILITY.md).

Authentication: `api_key=` (default: $SLINFER_API_KEY, else the key `slinfer up` wrote to
$SLINFER_HOME/api_key), sent as `authorization: Bearer` metadata; `tls_ca=` connects with TLS.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from slinfer.messages import (
    DEFAULT_ADDRESS,
    Chunk,
    Completion,
    Result,
    SlinferError,
    _addresses,
    _broken,
    _create_key_request,
    _deploy_request,
    _event,
    _generate_request,
    _Stream,
    _unavailable,
    _wrap,
    default_api_key,
)
from slinfer.v1 import gateway_pb2, gateway_pb2_grpc

__all__ = [
    "DEFAULT_ADDRESS",
    "AsyncClient",
    "Chunk",
    "Client",
    "Completion",
    "Result",
    "SlinferError",
    "default_api_key",
]


def _backoff(attempt: int, replicas: int) -> float:
    """No wait for the first try of each other replica; then exponential, capped."""
    if attempt < replicas:
        return 0.05
    return min(0.2 * 2 ** (attempt - replicas), 3.0)


class _Base:
    def __init__(
        self,
        address: str | Sequence[str],
        api_key: str | None,
        tls_ca: str | None,
        timeout_s: float,
        stream_timeout_s: float,
        retries: int,
    ) -> None:
        self.addresses = _addresses(address)
        self.api_key = api_key if api_key is not None else default_api_key()
        self._metadata = (("authorization", f"Bearer {self.api_key}"),) if self.api_key else ()
        self._ca = Path(tls_ca).read_bytes() if tls_ca else None
        self.timeout_s, self.stream_timeout_s, self.retries = timeout_s, stream_timeout_s, retries
        self._current = 0

    @property
    def _resume_attempts(self) -> int:
        """A broken stream tries every replica at least twice."""
        return max(self.retries, 2 * len(self.addresses))

    def _failover(self, failed: int | None = None) -> None:
        """The next gateway replica answers from now on. `failed`: the replica a call just
        failed on; concurrent calls that saw the same replica fail move once, not each."""
        if failed is None:
            failed = self._current
        if self._current == failed:
            self._current = (failed + 1) % len(self.addresses)


class Client(_Base):
    """Blocking client. Every call has a deadline (`timeout_s`, generate: `stream_timeout_s`).
    `address` may list several gateway replicas."""

    def __init__(
        self,
        address: str | Sequence[str] = DEFAULT_ADDRESS,
        *,
        api_key: str | None = None,
        tls_ca: str | None = None,
        timeout_s: float = 30.0,
        stream_timeout_s: float = 600.0,
        retries: int = 4,
    ):
        super().__init__(address, api_key, tls_ca, timeout_s, stream_timeout_s, retries)
        creds = grpc.ssl_channel_credentials(self._ca) if self._ca else None
        self._channels = [
            grpc.secure_channel(a, creds) if creds else grpc.insecure_channel(a)
            for a in self.addresses
        ]
        self._stubs = [gateway_pb2_grpc.GatewayStub(ch) for ch in self._channels]

    @property
    def _stub(self) -> gateway_pb2_grpc.GatewayStub:
        return self._stubs[self._current]

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for ch in self._channels:
            ch.close()

    def _retrying(self) -> Retrying:
        return Retrying(
            retry=retry_if_exception(_unavailable),
            stop=stop_after_attempt(max(self.retries, len(self.addresses))),
            wait=wait_exponential(multiplier=0.2, max=3.0),
            reraise=True,
        )

    def _unary(self, method: str, request: Any) -> Any:
        try:
            for attempt in self._retrying():
                with attempt:
                    used = self._current
                    try:
                        return getattr(self._stubs[used], method)(
                            request, timeout=self.timeout_s, metadata=self._metadata
                        )
                    except grpc.RpcError as exc:
                        if _unavailable(exc):
                            self._failover(used)
                        raise
        except grpc.RpcError as exc:
            raise _wrap(exc) from None

    def generate(
        self,
        model: str,
        prompt: str | None = None,
        *,
        messages: Sequence[dict[str, str]] | None = None,
        prompt_token_ids: Sequence[int] | None = None,
        request_id: str | None = None,
        **sampling: Any,
    ) -> Iterator[Chunk | Completion]:
        """Yield text chunks as tokens arrive, then one Completion; a broken stream is
        resumed on a gateway replica with the tokens received (no text lost or repeated)."""
        req = _generate_request(model, prompt, messages, request_id, sampling, prompt_token_ids)
        stream = _Stream(req)
        while True:
            used = self._current
            try:
                for resp in self._stubs[used].Generate(
                    stream.next_request(), timeout=self.stream_timeout_s, metadata=self._metadata
                ):
                    stream.seen(resp)
                    yield _event(resp)
                return
            except grpc.RpcError as exc:
                if not _broken(exc) or stream.resumes >= self._resume_attempts:
                    raise _wrap(exc) from None
                stream.resumes += 1
                self._failover(used)
                time.sleep(_backoff(stream.resumes, len(self.addresses)))

    def complete(self, model: str, prompt: str | None = None, **kw: Any) -> Result:
        text, final = [], None
        for ev in self.generate(model, prompt, **kw):
            if isinstance(ev, Chunk):
                text.append(ev.text)
            else:
                final = ev
        assert final is not None
        return Result("".join(text), final)

    def deploy(self, model_id: str, path: str, **opts: Any) -> gateway_pb2.ModelInfo:
        return self._unary("DeployModel", _deploy_request(model_id, path, **opts)).model

    def delete(self, model_id: str) -> int:
        req = gateway_pb2.DeleteModelRequest(model_id=model_id)
        return int(self._unary("DeleteModel", req).instances_unloaded)

    def models(self) -> list[gateway_pb2.ModelInfo]:
        return list(self._unary("ListModels", gateway_pb2.ListModelsRequest()).models)

    def status(self) -> gateway_pb2.ClusterStatus:
        return self._unary("GetClusterStatus", gateway_pb2.GetClusterStatusRequest())

    def create_key(self, tenant: str, *, admin: bool = False, name: str = "", **limits: int) -> Any:
        return self._unary("CreateKey", _create_key_request(tenant, admin, name, limits))

    def list_keys(self, tenant: str = "") -> list[gateway_pb2.KeyInfo]:
        return list(self._unary("ListKeys", gateway_pb2.ListKeysRequest(tenant=tenant)).keys)

    def revoke_key(self, key_id: str) -> bool:
        req = gateway_pb2.RevokeKeyRequest(key_id=key_id)
        return bool(self._unary("RevokeKey", req).revoked)


class AsyncClient(_Base):
    """asyncio client with the same methods as `Client`."""

    def __init__(
        self,
        address: str | Sequence[str] = DEFAULT_ADDRESS,
        *,
        api_key: str | None = None,
        tls_ca: str | None = None,
        timeout_s: float = 30.0,
        stream_timeout_s: float = 600.0,
        retries: int = 4,
    ):
        super().__init__(address, api_key, tls_ca, timeout_s, stream_timeout_s, retries)
        creds = grpc.ssl_channel_credentials(self._ca) if self._ca else None
        self._channels = [
            grpc.aio.secure_channel(a, creds) if creds else grpc.aio.insecure_channel(a)
            for a in self.addresses
        ]
        self._stubs = [gateway_pb2_grpc.GatewayStub(ch) for ch in self._channels]

    @property
    def _stub(self) -> gateway_pb2_grpc.GatewayStub:
        return self._stubs[self._current]

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for ch in self._channels:
            await ch.close()

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            retry=retry_if_exception(_unavailable),
            stop=stop_after_attempt(max(self.retries, len(self.addresses))),
            wait=wait_exponential(multiplier=0.2, max=3.0),
            reraise=True,
        )

    async def _unary(self, method: str, request: Any) -> Any:
        try:
            async for attempt in self._retrying():
                with attempt:
                    used = self._current
                    try:
                        return await getattr(self._stubs[used], method)(
                            request, timeout=self.timeout_s, metadata=self._metadata
                        )
                    except grpc.RpcError as exc:
                        if _unavailable(exc):
                            self._failover(used)
                        raise
        except grpc.RpcError as exc:
            raise _wrap(exc) from None

    async def generate(
        self,
        model: str,
        prompt: str | None = None,
        *,
        messages: Sequence[dict[str, str]] | None = None,
        prompt_token_ids: Sequence[int] | None = None,
        request_id: str | None = None,
        **sampling: Any,
    ) -> AsyncIterator[Chunk | Completion]:
        req = _generate_request(model, prompt, messages, request_id, sampling, prompt_token_ids)
        stream = _Stream(req)
        while True:
            used = self._current
            call = self._stubs[used].Generate(
                stream.next_request(), timeout=self.stream_timeout_s, metadata=self._metadata
            )
            try:
                async for resp in call:
                    stream.seen(resp)
                    yield _event(resp)
                return
            except grpc.RpcError as exc:
                if not _broken(exc) or stream.resumes >= self._resume_attempts:
                    raise _wrap(exc) from None
                stream.resumes += 1
                self._failover(used)
                await asyncio.sleep(_backoff(stream.resumes, len(self.addresses)))
            finally:
                call.cancel()  # a consumer that stops early releases the request

    async def complete(self, model: str, prompt: str | None = None, **kw: Any) -> Result:
        text, final = [], None
        async for ev in self.generate(model, prompt, **kw):
            if isinstance(ev, Chunk):
                text.append(ev.text)
            else:
                final = ev
        assert final is not None
        return Result("".join(text), final)

    async def deploy(self, model_id: str, path: str, **opts: Any) -> gateway_pb2.ModelInfo:
        return (await self._unary("DeployModel", _deploy_request(model_id, path, **opts))).model

    async def delete(self, model_id: str) -> int:
        req = gateway_pb2.DeleteModelRequest(model_id=model_id)
        return int((await self._unary("DeleteModel", req)).instances_unloaded)

    async def models(self) -> list[gateway_pb2.ModelInfo]:
        return list((await self._unary("ListModels", gateway_pb2.ListModelsRequest())).models)

    async def status(self) -> gateway_pb2.ClusterStatus:
        return await self._unary("GetClusterStatus", gateway_pb2.GetClusterStatusRequest())

    async def create_key(
        self, tenant: str, *, admin: bool = False, name: str = "", **limits: int
    ) -> Any:
        return await self._unary("CreateKey", _create_key_request(tenant, admin, name, limits))

    async def list_keys(self, tenant: str = "") -> list[gateway_pb2.KeyInfo]:
        resp = await self._unary("ListKeys", gateway_pb2.ListKeysRequest(tenant=tenant))
        return list(resp.keys)

    async def revoke_key(self, key_id: str) -> bool:
        req = gateway_pb2.RevokeKeyRequest(key_id=key_id)
        return bool((await self._unary("RevokeKey", req)).revoked)
