"""`BackgroundCloser`: sends finished contexts' CLOSE calls on one worker thread, off the answer's path.

Freeing a context on the server is a whole round trip (~47 ms of every question on the emulated
40 ms link) that the user's answer need not wait for: the answer is written, and the server only
needs to hear about it eventually. So a conversation hands its CLOSE here and returns at once.

Best effort, as a blocking close always was: a close that fails, or that is still queued when the
owner stops (`drain`'s bound passed, or the queue full), only leaves the context to the server's
idle TTL. One worker, started on the first close and stopped by `drain`, so an owner that is
closed leaves no thread behind.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from protos import edge_cloud_v1_pb2 as pb

log = logging.getLogger(__name__)

MAX_PENDING_CLOSES = 256  # beyond this the cloud is not keeping up: later closes go to the idle TTL


class BackgroundCloser:
    """A bounded queue of CLOSE requests and the one thread that sends them with `send`.

    `send` makes the call and handles its errors (it should raise nothing; what it does raise is
    logged). Thread-safe: any thread may `submit`; the owner calls `drain` once, when it closes.
    """

    def __init__(self, send: Callable[[pb.StepRequest], None], *,
                 max_pending: int = MAX_PENDING_CLOSES) -> None:
        self._send = send
        self._max_pending = max_pending
        self._cond = threading.Condition()  # guards everything below
        self._queue: deque[pb.StepRequest] = deque()
        self._sending = False  # the worker is inside `send`
        self._stopping = False  # `drain` began: no new closes, the worker ends once the queue is empty
        self._thread: threading.Thread | None = None
        self.dropped = 0  # closes never sent (queue full, submitted after drain, or drain's bound passed)

    @property
    def pending(self) -> int:
        """Closes queued or being sent."""
        with self._cond:
            return len(self._queue) + self._sending

    def submit(self, request: pb.StepRequest) -> bool:
        """Queue `request`; returns at once. False when it was dropped (full, or already draining)."""
        with self._cond:
            if self._stopping or len(self._queue) >= self._max_pending:
                self.dropped += 1
                log.debug("close of context %s dropped (%s); the server's idle TTL frees it",
                          request.context_id[:8], "closer stopped" if self._stopping else "queue full")
                return False
            self._queue.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="cloud-close", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return True

    def drain(self, timeout_s: float) -> int:
        """Stop taking closes and wait up to `timeout_s` for the queued ones to be sent.

        Returns how many were left unsent (they are forgotten: the idle TTL frees them). A close
        still being sent then is the owner's to cancel (close the channel), then `join`.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            while self._queue or self._sending:
                left_s = deadline - time.monotonic()
                if left_s <= 0:
                    break
                self._cond.wait(left_s)
            unsent = len(self._queue) + self._sending
            self.dropped += len(self._queue)
            self._queue.clear()
        if unsent:
            log.info("%d context close(s) not sent within %.1f s; the server's idle TTL frees them",
                     unsent, timeout_s)
        return unsent

    def join(self, timeout_s: float) -> bool:
        """Wait for the worker to end (after `drain`); True when no worker thread is left."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        return thread is None or not thread.is_alive()

    def _work(self) -> None:
        while (request := self._next()) is not None:
            try:
                self._send(request)
            except Exception:  # a bug in `send` must not stop every later close
                log.warning("closing context %s failed", request.context_id[:8], exc_info=True)
            finally:
                with self._cond:
                    self._sending = False
                    self._cond.notify_all()

    def _next(self) -> pb.StepRequest | None:
        """The next close to send; None once draining and nothing is left."""
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if not self._queue:
                return None
            self._sending = True
            return self._queue.popleft()
