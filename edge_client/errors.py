"""Errors of the edge client: what went wrong reaching the cloud, in terms a user can act on."""

from __future__ import annotations

from glimp_common.errors import BadInputError, GlimpError


class CloudError(GlimpError):
    """The cloud LLM could not be used for this call."""


class CloudUnavailableError(CloudError):
    """The cloud did not answer in time or the connection failed (safe to fall back to the SLM)."""


class CloudUnreachableError(CloudError):
    """The cloud did not answer the start check (wrong URL or port, or no server there yet).

    Raised before any step unless degraded mode was asked for (`offline_ok`); an outage later in
    a run is `CloudUnavailableError` instead, and the SLM carries on.
    """


class NotAuthorizedError(CloudError):
    """The cloud rejected the edge token: fix GLIMP_EDGE_TOKEN; retrying will not help."""


class CloudRejectedError(CloudError):
    """The cloud refused the request as invalid (a bug or a limit on this side): not retried."""


class ContextMismatchError(CloudError):
    """The cloud's copy of the context differs from ours; resolved by one full resend."""


__all__ = [
    "BadInputError", "CloudError", "CloudRejectedError", "CloudUnavailableError", "CloudUnreachableError",
    "ContextMismatchError",
    "NotAuthorizedError",
]
