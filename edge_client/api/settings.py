"""The API server's settings: one frozen object, built from flags and their environment twins."""

from __future__ import annotations

from dataclasses import dataclass

from edge_client.cost import Prices
from glimp_common.errors import BadInputError

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ApiSettings:
    """How the endpoint is exposed and what it promises a client."""

    model_id: str = "glimprouter"  # the one model id `/v1/models` lists and requests must name
    api_key: str | None = None  # None: no key asked; else every /v1 request needs `Bearer <key>`
    prices: Prices | None = None  # cloud prices for usage.glimp.cost; None: no cost reported
    offline_ok: bool = True  # a degraded answer (cloud down) is given; False: 503 instead
    stream_credits: int = 64  # events a stream may run ahead of its client before the SLM waits
    stall_timeout_s: float = 60.0  # a client that reads nothing this long is dropped (cancelled)

    def __post_init__(self) -> None:
        if not self.model_id.strip():
            raise BadInputError("the model id must not be empty")
        if self.api_key is not None and not self.api_key.strip():
            raise BadInputError("the API key is empty; give a key file with the key in it, or no key")
        if self.stream_credits < 1:
            raise BadInputError(f"stream_credits must be >= 1, got {self.stream_credits}")
        if self.stall_timeout_s <= 0:
            raise BadInputError(f"stall_timeout_s must be > 0, got {self.stall_timeout_s}")
