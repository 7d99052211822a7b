"""OpenAI-style errors: `{"error": {"message", "type", "param", "code"}}` with the matching status.

400 bad input, 401 a missing or wrong key, 404 an unknown model or route, 503 the cloud is down
and the request did not accept a degraded answer, 502 the cloud refused this device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_client.errors import CloudError, NotAuthorizedError
from glimp_common.errors import BadInputError, GlimpError


@dataclass
class ApiError(GlimpError):
    """An error the client is told about, with the HTTP status it comes with."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The JSON body OpenAI's API (and so its clients) use for an error."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", param, code)


def cloud_down(reason: str) -> ApiError:
    return ApiError(
        503, f"the cloud LLM is unavailable ({reason}) and this request does not accept an answer written "
        "by the small model alone; retry later, or send offline_ok: true", "service_unavailable", None,
        "cloud_unavailable",
    )


class GenerationCancelled(GlimpError):
    """The client went away (or a stream stalled): the generation stopped between tokens."""


def api_error(error: BaseException) -> ApiError:
    """The API error a client is told for an exception that ended its request."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, BadInputError):
        return bad_request(str(error), None, "invalid_value")
    if isinstance(error, NotAuthorizedError):
        return ApiError(502, f"the cloud refused this device: {error}", "upstream_error", None,
                        "cloud_refused")
    if isinstance(error, CloudError):
        return ApiError(502, f"the cloud LLM failed: {error}", "upstream_error", None, "cloud_error")
    if isinstance(error, GenerationCancelled):
        return ApiError(499, str(error), "cancelled", None, "cancelled")
    return ApiError(500, f"internal error: {type(error).__name__}: {error}", "server_error", None, None)
