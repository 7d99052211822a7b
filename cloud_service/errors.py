"""Errors of the cloud service: a request it refuses, a server that would not start."""

from __future__ import annotations

from glimp_common.errors import BadInputError, GlimpError


class InvalidRequest(BadInputError):
    """A StepRequest the service refuses (malformed, out of range): Triton's INVALID_ARG."""


class ContextTooLarge(InvalidRequest):
    """One context would need more cache than the server's whole budget: refused, not evicted."""


class ServerStartError(GlimpError):
    """The Triton server did not start or did not become ready; the message holds its log tail."""


__all__ = ["ContextTooLarge", "GlimpError", "InvalidRequest", "ServerStartError"]
