"""Errors in OpenAI's JSON shape, and the one place gRPC status codes become HTTP statuses.

{"error": {"message": "...", "type": "invalid_request_error", "param": "model",
           "code": "model_not_found"}}
"""

from __future__ import annotations

import grpc

# No capacity and unavailable are worth retrying: how soon, in seconds (Retry-After).
RETRY_AFTER_S = 1

_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
    499: "cancelled",
    503: "service_unavailable_error",
    504: "timeout_error",
}
# Request fields a gateway message may name, most specific first.
_FIELDS = ("max_tokens", "temperature", "top_p", "stop", "seed", "messages", "message", "model")


class ApiError(Exception):
    """An answer in OpenAI's error shape (a plain exception: frameworks set its traceback)."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    @property
    def type(self) -> str:
        return _TYPE.get(self.status, "server_error")

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(RETRY_AFTER_S)} if self.status in (429, 503) else {}


def invalid(param: str, message: str) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value")


def from_grpc(code: grpc.StatusCode, details: str, prompt_field: str) -> ApiError:
    """The HTTP error for a gateway status; `prompt_field` is `messages` (chat) or `prompt`."""
    status = _STATUS.get(code, 500)
    message = details or code.name
    if status == 404:
        return ApiError(404, message, param="model", code="model_not_found")
    if status == 429:
        return ApiError(429, message, code="no_capacity")
    if status == 503:
        return ApiError(503, message, code="unavailable")
    if status != 400:
        return ApiError(status, message, code=code.name.lower())
    if "exceeds the model's context" in message:
        return ApiError(400, message, param=prompt_field, code="context_length_exceeded")
    param = next((f for f in _FIELDS if f in message), None)
    if param == "message" or (param is None and "prompt" in message):
        param = prompt_field
    return ApiError(400, message, param=param, code=code.name.lower())
