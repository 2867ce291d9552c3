"""Transport security shared by every service: TLS, bearer credentials, the insecure mode.

- Every server requires `authorization: Bearer <credential>` on every call except health
  checks and reflection: the cluster token (what the services use between themselves), or an
  API key where the service takes them (the gateway; the consolidator's operator calls,
  admin keys only). Which keys are valid is auth.py's business; this module only gates.
- TLS is optional: a server with `tls_cert` + `tls_key` serves TLS only; a client with
  `tls_ca` connects with TLS, trusting that CA.
- `insecure` turns the gate off. It is only ever set by an explicit `--insecure` flag, and a
  service refuses to start with it on anything but a loopback address.

The services' own clients (workers, memory, consolidator channels) take the process's
`Security` (`configure`, called by each service at start), so a call between services always
carries the cluster token and speaks TLS when the cluster does.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc

TOKEN_ENV = "SLINFER_CLUSTER_TOKEN"
_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


@dataclass(frozen=True, slots=True)
class Security:
    insecure: bool = False  # no credentials checked (loopback only)
    cluster_token: str = ""  # what the services present to each other
    tls_cert: str = ""  # server certificate chain (PEM) and key: serve TLS
    tls_key: str = ""
    tls_ca: str = ""  # CA (PEM) the clients trust: connect with TLS

    def __post_init__(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("give both --tls-cert and --tls-key, or neither")
        for path in (self.tls_cert, self.tls_key, self.tls_ca):
            if path and not Path(path).is_file():
                raise ValueError(f"TLS file {path} does not exist")

    @classmethod
    def from_env(cls, **overrides: Any) -> Security:
        """The cluster token from $SLINFER_CLUSTER_TOKEN (or a file named by
        $SLINFER_CLUSTER_TOKEN_FILE), TLS files from $SLINFER_TLS_{CERT,KEY,CA}."""
        token = os.environ.get("SLINFER_CLUSTER_TOKEN", "")
        token_file = os.environ.get("SLINFER_CLUSTER_TOKEN_FILE", "")
        if not token and token_file:
            token = Path(token_file).read_text().strip()
        values: dict[str, Any] = {
            "cluster_token": token,
            "tls_cert": os.environ.get("SLINFER_TLS_CERT", ""),
            "tls_key": os.environ.get("SLINFER_TLS_KEY", ""),
            "tls_ca": os.environ.get("SLINFER_TLS_CA", ""),
        }
        values.update({k: v for k, v in overrides.items() if v not in (None, "")})
        return cls(**values)

    def check_listen(self, listen: str, *, needs_token: bool = True) -> None:
        """Refuse what would expose an unauthenticated service (ValueError, at start-up)."""
        host = listen.rpartition(":")[0].strip("[]")
        if self.insecure and not is_loopback(host):
            raise ValueError(
                f"--insecure serves without authentication, so only on a loopback address; "
                f"{listen} is not one (listen on 127.0.0.1, or drop --insecure)"
            )
        if not self.insecure and needs_token and not self.cluster_token:
            raise ValueError(
                f"authentication is on but no cluster token is set: export {TOKEN_ENV} (the "
                "same secret for every service of the cluster) or pass --insecure on loopback"
            )
        if not self.insecure and self.cluster_token.startswith("change-me"):
            raise ValueError(
                f"{TOKEN_ENV} is the manifests' placeholder: create the slinfer-secrets Secret "
                "with a random token (deploy/k8s/secret.yaml says how)"
            )

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)


INSECURE = Security(insecure=True)
_process = Security()


def configure(security: Security) -> None:
    """The security of this process's clients to other services."""
    global _process
    _process = security


def current() -> Security:
    return _process


def is_loopback(host: str) -> bool:
    if not host:
        return False  # every interface
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except (OSError, ValueError):
            return False


def bearer(metadata: Any) -> str:
    """The credential of `authorization: Bearer <credential>` ("" when absent)."""
    for key, value in metadata or ():
        if key.lower() == "authorization":
            scheme, _, credential = str(value).partition(" ")
            if scheme.lower() == "bearer":
                return credential.strip()
    return ""


def same_secret(a: str, b: str) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


# ---- servers --------------------------------------------------------------------------------


class BearerGate(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED for any call without a valid credential (health and reflection are
    open). `accept(method, credential)` says whether a credential other than the cluster
    token (an API key) may call `method`."""

    def __init__(
        self, security: Security, accept: Callable[[str, str], bool] | None = None
    ) -> None:
        self.security, self.accept = security, accept

    def allows(self, method: str, credential: str) -> bool:
        if self.security.insecure or method.startswith(_OPEN_PREFIXES):
            return True
        if same_secret(credential, self.security.cluster_token):
            return True
        return bool(credential) and self.accept is not None and self.accept(method, credential)

    async def intercept_service(self, continuation, handler_call_details):  # noqa: ANN001, ANN201
        handler = await continuation(handler_call_details)
        credential = bearer(handler_call_details.invocation_metadata)
        if handler is None or self.allows(handler_call_details.method, credential):
            return handler
        why = (
            "this call needs `authorization: Bearer <API key>` metadata (`slinfer keys "
            "create` makes a key; the SDK and CLI read $SLINFER_API_KEY)"
            if not credential
            else "the credential is not valid here (unknown or revoked key, or a key "
            "without the role this call needs)"
        )
        return _denied(handler, why)


def _denied(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    async def deny(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def deny_stream(_request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - abort raises

    ser, des = handler.response_serializer, handler.request_deserializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(deny, des, ser)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(deny_stream, des, ser)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(deny, des, ser)
    return grpc.stream_stream_rpc_method_handler(deny_stream, des, ser)


def bind(server: grpc.aio.Server, listen: str, security: Security) -> int:
    """Add the listening port (TLS when configured); returns the port."""
    if security.tls:
        creds = grpc.ssl_server_credentials(
            [(Path(security.tls_key).read_bytes(), Path(security.tls_cert).read_bytes())]
        )
        return server.add_secure_port(listen, creds)
    return server.add_insecure_port(listen)


# ---- clients --------------------------------------------------------------------------------


def auth_metadata(credential: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {credential}"),) if credential else ()


class _Bearer:
    def __init__(self, credential: str) -> None:
        self.metadata = auth_metadata(credential)

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *self.metadata)
        return replace_details(details, metadata)


# grpc.aio files an interceptor under the first of the four kinds it is an instance of (an
# if/elif chain), so each kind needs its own class.
class _BearerUnaryUnary(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):  # noqa: ANN001, ANN201
        return await continuation(self._details(details), request)


class _BearerUnaryStream(_Bearer, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):  # noqa: ANN001, ANN201
        return await continuation(self._details(details), request)


class _BearerStreamUnary(_Bearer, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, details, requests):  # noqa: ANN001, ANN201
        return await continuation(self._details(details), requests)


class _BearerStreamStream(_Bearer, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, details, requests):  # noqa: ANN001, ANN201
        return await continuation(self._details(details), requests)


def bearer_interceptors(credential: str) -> list[Any]:
    """Client interceptors that send `authorization: Bearer <credential>` on every call."""
    kinds = (_BearerUnaryUnary, _BearerUnaryStream, _BearerStreamUnary, _BearerStreamStream)
    return [kind(credential) for kind in kinds]


def replace_details(
    details: grpc.aio.ClientCallDetails, metadata: grpc.aio.Metadata
) -> grpc.aio.ClientCallDetails:
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


def channel(
    address: str,
    security: Security | None = None,
    options: list[tuple[str, Any]] | None = None,
) -> grpc.aio.Channel:
    """An asyncio channel to another service, with the cluster token and TLS as configured."""
    sec = security or _process
    interceptors = bearer_interceptors(sec.cluster_token) if sec.cluster_token else None
    if sec.tls_ca:
        creds = grpc.ssl_channel_credentials(Path(sec.tls_ca).read_bytes())
        return grpc.aio.secure_channel(address, creds, options=options, interceptors=interceptors)
    return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)


def add_security_args(parser: Any) -> None:
    """--insecure and the TLS flags every service's `__main__` takes."""
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="serve without authentication (loopback addresses only); otherwise every call "
        f"needs a bearer credential: the cluster token (${TOKEN_ENV}) or an API key",
    )
    parser.add_argument("--tls-cert", default="", help="serve TLS with this certificate (PEM)")
    parser.add_argument("--tls-key", default="", help="...and this private key (PEM)")
    parser.add_argument(
        "--tls-ca", default="", help="connect to the other services with TLS, trusting this CA"
    )


def security_from_args(ns: Any) -> Security:
    sec = Security.from_env(tls_cert=ns.tls_cert, tls_key=ns.tls_key, tls_ca=ns.tls_ca)
    return replace(sec, insecure=True) if ns.insecure else sec
