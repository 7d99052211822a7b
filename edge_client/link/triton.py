"""`TritonLLM`: the `LLMBackend` for the large model on a Triton server, over one `TritonLink`.

Bare: no retries, no breaker (`edge_client.connect` wraps it in `ResilientLLM` for that). Each
conversation sends only what is new (`edge_client.link.delta`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

from edge_client.errors import BadInputError, CloudError, NotAuthorizedError
from edge_client.link.delta import TritonConversation
from edge_client.link.transport import CloudLinkConfig, TritonLink
from edge_client.llm_backend import LLMAction, LLMRequest
from onnx_lm import GREEDY, ChatMessage

log = logging.getLogger(__name__)



class TritonLLM:
    """`LLMBackend` for the LLM on Triton. Contexts are scoped to `client_key` (random per instance).

    `resend_full` is a measurement baseline (the benchmark's): every call resends the whole
    transcript, as a link without a server-side context must.
    """

    name = "triton"

    def __init__(self, config: CloudLinkConfig, *, client_key: bytes | None = None,
                 link: TritonLink | None = None, resend_full: bool = False) -> None:
        if client_key is not None and len(client_key) < 16:
            raise BadInputError("client_key must hold at least 16 random bytes")
        self.config = config
        self.client_key = client_key or os.urandom(32)
        self.link = link or TritonLink(config)
        self.resend_full = resend_full

    @property
    def provider(self) -> str:
        """Just "triton": the bare link, as the trace has always named it (ResilientLLM adds the url)."""
        return self.name

    def open(self, messages: Sequence[ChatMessage]) -> TritonConversation:
        """A new context (created on the server by its first call)."""
        return TritonConversation(self.link, self.client_key, messages, resend_full=self.resend_full)

    def ping(self, timeout_s: float | None = None) -> float:
        """A real tiny inference (create, write one token, close); its seconds. Raises CloudError."""
        started = time.perf_counter()
        conversation = self.open([ChatMessage("user", "ping")])
        reply = conversation.call(LLMRequest(LLMAction.WRITE_STEP, "", GREEDY, max_tokens=1),
                                  timeout_s=timeout_s)
        conversation.close()
        if reply.cost.decode_tokens != 1:
            raise CloudError(f"the ping wrote {reply.cost.decode_tokens} tokens instead of 1")
        return time.perf_counter() - started

    def ready(self, timeout_s: float | None = None) -> bool:
        """True when a real tiny inference succeeds; NotAuthorizedError still raises (retrying won't help)."""
        try:
            self.ping(timeout_s)
        except NotAuthorizedError:
            raise
        except CloudError as exc:
            log.info("cloud not ready: %s", exc)
            return False
        return True

    def close(self) -> None:
        self.link.close()

    def __enter__(self) -> TritonLLM:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
