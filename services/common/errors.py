"""Typed domain errors and the one place that maps them to gRPC status codes."""

from __future__ import annotations

import grpc

from slinfer.services.common.engine_types import (
    InvalidRequest,
    KVCapacityExceeded,
    KVNotResizable,
    NotLoaded,
)


class SlinferError(Exception):
    """Base of every domain error; `code` is the gRPC status it maps to."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(SlinferError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class ModelNotFound(SlinferError):
    code = grpc.StatusCode.NOT_FOUND


class InstanceNotFound(SlinferError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(SlinferError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(SlinferError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class NodeNotFound(SlinferError):
    code = grpc.StatusCode.NOT_FOUND


class StaleRevision(SlinferError):
    """A ledger change based on an older instance revision than the ledger's."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class RevisionConflict(SlinferError):
    """A ledger change based on a revision the ledger never issued."""

    code = grpc.StatusCode.ABORTED


class NeverFits(SlinferError):
    """A request whose memory demand exceeds every node, even alone: retrying cannot help."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class NoCapacity(SlinferError):
    """No capacity now: retrying later can help (`retry_after_s` is the hint sent to the
    client as `retry-after-s` trailing metadata)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class LimitExceeded(SlinferError):
    """A tenant's limit (concurrent requests, deployed models) is reached."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(SlinferError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(SlinferError):
    code = grpc.StatusCode.PERMISSION_DENIED


class RequestFailed(SlinferError):
    """The engine failed on this request alone; it is not retried elsewhere."""

    code = grpc.StatusCode.INTERNAL


class DeadlineMissed(SlinferError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class StoreUnavailable(SlinferError):
    code = grpc.StatusCode.UNAVAILABLE


class WorkerUnavailable(SlinferError):
    code = grpc.StatusCode.UNAVAILABLE


def trailers_of(exc: BaseException) -> tuple[tuple[str, str], ...]:
    """Trailing metadata that goes with the status: the retry hint of a refusal for
    capacity."""
    retry = getattr(exc, "retry_after_s", None)
    return (("retry-after-s", f"{retry:.2f}"),) if retry is not None else ()


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and message for any exception a handler lets escape."""
    if isinstance(exc, SlinferError):
        return exc.code, str(exc)
    if isinstance(exc, InvalidRequest):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, KVCapacityExceeded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, KVNotResizable | NotLoaded):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code(), exc.details() or str(exc)
    if isinstance(exc, MemoryError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, "out of memory handling the call; retry later"
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
