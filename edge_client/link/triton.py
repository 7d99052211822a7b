"""`TritonLLM`: the `LLMBackend` for the large model on a Triton server, over one `TritonLink`.

Bare: no retries, no breaker (`edge_client.connect` wraps it in `ResilientLLM` for that). Each
conversation sends only what is new (`edge_client.link.delta`); a finished conversation's CLOSE
goes out on the link's background closer (`edge_client.link.closer`), off the answer's path.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

from edge_client.errors import BadInputError, CloudError, NotAuthorizedError
from edge_client.link.closer import BackgroundCloser
from edge_client.link.delta import TritonConversation, send_close
from edge_client.link.transport import CloudLinkConfig, TritonLink
from edge_client.llm_backend import LLMAction, LLMRequest
from onnx_lm import GREEDY, ChatMessage
from protos import edge_cloud_v1_pb2 as pb

log = logging.getLogger(__name__)

CLOSE_DRAIN_S = 2.0  # how long `close()` waits for queued context closes: enough for a few round
# trips on a slow link, short enough that exiting with the cloud gone never feels like a hang
_JOIN_S = 1.0  # the closer's thread, once its last call is cancelled by closing the channel


class TritonLLM:
    """`LLMBackend` for the LLM on Triton. Contexts are scoped to `client_key` (random per instance).

    `resend_full` is a measurement baseline (the benchmark's): every call resends the whole
    transcript, as a link without a server-side context must. `background_close` (default) sends
    a finished conversation's CLOSE on a worker thread, so `conversation.close()` returns at once;
    False makes it the blocking round trip it used to be (the benchmark's side-by-side baseline).
    `close()` waits up to `close_drain_s` for closes still queued, then drops them (the server's
    idle TTL frees those contexts).
    """

    name = "triton"

    def __init__(self, config: CloudLinkConfig, *, client_key: bytes | None = None,
                 link: TritonLink | None = None, resend_full: bool = False, background_close: bool = True,
                 close_drain_s: float = CLOSE_DRAIN_S) -> None:
        if client_key is not None and len(client_key) < 16:
            raise BadInputError("client_key must hold at least 16 random bytes")
        if not close_drain_s >= 0:
            raise BadInputError(f"close_drain_s must be >= 0 seconds, got {close_drain_s!r}")
        self.config = config
        self.client_key = client_key or os.urandom(32)
        self.link = link or TritonLink(config)
        self.resend_full = resend_full
        self.close_drain_s = close_drain_s
        self.closer = BackgroundCloser(self._send_close) if background_close else None

    @property
    def provider(self) -> str:
        """Just "triton": the bare link, as the trace has always named it (ResilientLLM adds the url)."""
        return self.name

    def open(self, messages: Sequence[ChatMessage]) -> TritonConversation:
        """A new context (created on the server by its first call)."""
        return TritonConversation(self.link, self.client_key, messages, resend_full=self.resend_full,
                                  closer=self.closer)

    def ping(self, timeout_s: float | None = None) -> float:
        """A real tiny inference (create, write one token, close); its seconds. Raises CloudError.

        Its close is a blocking round trip even with `background_close`: a ping measures all three,
        and a start check that returns leaves nothing of its own in flight on the link.
        """
        started = time.perf_counter()
        conversation = TritonConversation(self.link, self.client_key, [ChatMessage("user", "ping")])
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
        """Send the closes still queued (waiting `close_drain_s` at most), then close the channel."""
        if self.closer is not None:
            self.closer.drain(self.close_drain_s)
        # Closing the channel cancels a close still in flight (a dead cloud), which ends the worker.
        self.link.close()
        if self.closer is not None and not self.closer.join(_JOIN_S):
            log.warning("the context closer's thread did not stop within %.1f s", _JOIN_S)

    def __enter__(self) -> TritonLLM:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _send_close(self, close: pb.StepRequest) -> None:
        send_close(self.link, close)
