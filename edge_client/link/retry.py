"""Which cloud errors are safe to try again, and how often and how fast.

`retryable(error, action)`: only transport failures the server cannot have acted on twice in a
harmful way. UNAVAILABLE (connection refused, reset, socket closed), but never the
restricted-protocol rejection Triton also sends as UNAVAILABLE (that arrives here as
`NotAuthorizedError`); DEADLINE_EXCEEDED only for ABSORB, because a write that ran out of time
may have run, and doing a long call again would double the wait: that step degrades instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc

from edge_client.errors import (
    BadInputError,
    CloudError,
    CloudRejectedError,
    CloudUnavailableError,
    ContextMismatchError,
    NotAuthorizedError,
)
from edge_client.llm_backend import LLMAction


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how fast a failed call is tried again (all within the call's deadline)."""

    max_retries: int = 2  # attempts after the first one; 0: never retry
    backoff_s: float = 0.1  # wait before the first retry
    backoff_multiplier: float = 2.0  # each later retry waits this much longer

    def __post_init__(self) -> None:
        retries = self.max_retries
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise BadInputError(f"max_retries must be an integer >= 0, got {self.max_retries!r}")
        if not math.isfinite(self.backoff_s) or self.backoff_s < 0:
            raise BadInputError(f"backoff_s must be a finite number >= 0, got {self.backoff_s!r}")
        if not math.isfinite(self.backoff_multiplier) or self.backoff_multiplier < 1:
            raise BadInputError(f"backoff_multiplier must be >= 1, got {self.backoff_multiplier!r}")

    def delay_s(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        return self.backoff_s * self.backoff_multiplier ** (retry - 1)


def status_code(error: BaseException) -> grpc.StatusCode | None:
    """The gRPC status behind a cloud error (`transport.map_rpc_error` chains the RpcError)."""
    cause = error.__cause__
    code = getattr(cause, "code", None)
    if isinstance(cause, grpc.RpcError) and callable(code):
        value = code()
        return value if isinstance(value, grpc.StatusCode) else None
    return None


def retryable(error: CloudError, action: LLMAction) -> bool:
    """Whether `error` from a call doing `action` is safe to try again.

    Never: a rejected token, an invalid request, a refused resend, or an error with no gRPC
    status (it did not come from the transport).
    """
    if isinstance(error, NotAuthorizedError | CloudRejectedError | ContextMismatchError):
        return False
    if not isinstance(error, CloudUnavailableError):
        return False
    code = status_code(error)
    if code == grpc.StatusCode.UNAVAILABLE:
        return True
    # Only an absorb is cheap and harmless to repeat after a deadline: it writes nothing new.
    return code == grpc.StatusCode.DEADLINE_EXCEEDED and action == LLMAction.ABSORB
