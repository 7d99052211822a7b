"""Retry rules, circuit breaker, health probe and wire framing: the pieces, one at a time.

The breaker runs on a hand-driven clock; the probe thread on plain callables; the retry rules on
real errors from real gRPC calls (a dead port, a real server with a wrong token or a deadline).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from link_helpers import CALL_TIMEOUT_S

from bench.wire import GrpcFraming
from cloud_service.launcher import TritonServer, pick_free_port
from edge_client.errors import (
    BadInputError,
    CloudError,
    CloudRejectedError,
    CloudUnavailableError,
    NotAuthorizedError,
)
from edge_client.link import (
    BreakerState,
    CircuitBreaker,
    CloudLinkConfig,
    HealthMonitor,
    ResilienceConfig,
    ResilientLLM,
    RetryPolicy,
    TritonLLM,
    retryable,
)
from edge_client.llm_backend import LLMAction, LLMRequest
from onnx_lm import GREEDY, ChatMessage

MESSAGES = [ChatMessage("user", "hello")]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def _error_of(call: Callable[[], object]) -> CloudError:
    with pytest.raises(CloudError) as caught:
        call()
    return caught.value


def _write(llm: TritonLLM | ResilientLLM, max_tokens: int = 4) -> Callable[[], object]:
    request = LLMRequest(LLMAction.WRITE_STEP, "", GREEDY, max_tokens=max_tokens)
    return lambda: llm.open(MESSAGES).call(request)


# ---- retry rules -----------------------------------------------------------------------------


@pytest.mark.parametrize("fields", [{"max_retries": -1}, {"max_retries": 1.5}, {"backoff_s": -0.1},
                                    {"backoff_s": float("nan")}, {"backoff_multiplier": 0.5}])
def test_retry_policy_refuses_bad_values(fields: dict[str, float]) -> None:
    with pytest.raises(BadInputError):
        RetryPolicy(**fields)  # type: ignore[arg-type]


def test_retry_delays_grow() -> None:
    policy = RetryPolicy(max_retries=3, backoff_s=0.1, backoff_multiplier=2.0)
    assert [policy.delay_s(n) for n in (1, 2, 3)] == pytest.approx([0.1, 0.2, 0.4])


def test_only_transport_failures_are_retried(shared_server: TritonServer, link_token: str) -> None:
    with TritonLLM(CloudLinkConfig(f"127.0.0.1:{pick_free_port()}", link_token, timeout_s=2.0)) as nowhere:
        refused = _error_of(_write(nowhere))
    with TritonLLM(CloudLinkConfig(shared_server.grpc_url, link_token, timeout_s=1e-6)) as hurried:
        late = _error_of(_write(hurried))
    with TritonLLM(CloudLinkConfig(shared_server.grpc_url, "a-wrong-token-of-some-length")) as stranger:
        unauthorized = _error_of(_write(stranger))
    with TritonLLM(CloudLinkConfig(shared_server.grpc_url, link_token, timeout_s=CALL_TIMEOUT_S)) as client:
        refused_request = _error_of(_write(client, max_tokens=10**9))
    assert isinstance(refused, CloudUnavailableError) and retryable(refused, LLMAction.WRITE_STEP)
    # A write that ran out of time may have run: it degrades instead; an absorb is repeated.
    assert isinstance(late, CloudUnavailableError) and "DEADLINE" in str(late)
    assert not retryable(late, LLMAction.WRITE_STEP) and retryable(late, LLMAction.ABSORB)
    # Triton sends the token rejection as UNAVAILABLE too: it must not look like a transport error.
    assert isinstance(unauthorized, NotAuthorizedError) and not retryable(unauthorized, LLMAction.ABSORB)
    assert isinstance(refused_request, CloudRejectedError)
    assert not retryable(refused_request, LLMAction.ABSORB)
    assert not retryable(CloudUnavailableError("no gRPC status behind it"), LLMAction.ABSORB)


def test_retries_stop_at_the_count_and_within_the_deadline(link_token: str) -> None:
    url = f"127.0.0.1:{pick_free_port()}"
    counted = ResilientLLM.connect(CloudLinkConfig(url, link_token, timeout_s=30.0), ResilienceConfig(
        RetryPolicy(max_retries=2, backoff_s=0.01), check_at_start=False))
    timed = ResilientLLM.connect(CloudLinkConfig(url, link_token, timeout_s=1.0), ResilienceConfig(
        RetryPolicy(max_retries=5, backoff_s=0.4), check_at_start=False))
    for llm in (counted, timed):
        with llm, pytest.raises(CloudUnavailableError, match="Connection refused|failed to connect"):
            _write(llm)()
    assert counted.retries == 2
    assert timed.retries == 1  # a second retry would start 1.2 s after the call: past its 1 s deadline


# ---- circuit breaker ---------------------------------------------------------------------------


def test_breaker_opens_on_a_fault_fails_fast_and_closes_when_told() -> None:
    clock = Clock()
    breaker = CircuitBreaker(2.0, clock=clock)
    assert breaker.allow() and breaker.state == BreakerState.CLOSED and breaker.retry_in_s() == 0
    breaker.trip("connection refused")
    assert not breaker.allow() and not breaker.allow()
    clock.now_s += 0.5
    assert breaker.retry_in_s() == pytest.approx(1.5)
    breaker.trip("still refused")  # a fault while open restarts the back-off
    assert breaker.retry_in_s() == pytest.approx(2.0)
    breaker.reset()
    assert breaker.allow()
    snap = breaker.snapshot()
    assert (snap.opens, snap.closes, snap.rejected_calls, snap.reason) == (1, 1, 2, "still refused")


@pytest.mark.parametrize("period", [0, -1, float("inf"), float("nan")])
def test_breaker_refuses_a_bad_period(period: float) -> None:
    with pytest.raises(BadInputError):
        CircuitBreaker(period)


@pytest.mark.parametrize("fields", [{"breaker_s": 0}, {"ping_timeout_s": -1}, {"ping_interval_s": 0},
                                    {"retry": 2}])
def test_resilience_config_refuses_bad_values(fields: dict[str, object]) -> None:
    with pytest.raises(BadInputError):
        ResilienceConfig(**fields)  # type: ignore[arg-type]


# ---- health probe -------------------------------------------------------------------------------


class ScriptedProbe:
    """A probe that raises the given outcomes in turn, then succeeds; counts its calls."""

    def __init__(self, *outcomes: BaseException) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self, timeout_s: float) -> None:
        self.calls += 1
        if self.outcomes:
            raise self.outcomes.pop(0)


def _run_probe(probe: ScriptedProbe) -> tuple[CircuitBreaker, HealthMonitor]:
    breaker = CircuitBreaker(0.01)
    health = HealthMonitor(breaker, probe, ping_interval_s=0.01, ping_timeout_s=1.0).start()
    breaker.trip("test fault")
    return breaker, health


def _wait_closed(breaker: CircuitBreaker, timeout_s: float = 10.0) -> bool:
    done = threading.Event()

    def poll() -> None:
        while breaker.state != BreakerState.CLOSED:
            done.wait(0.005)
        done.set()

    threading.Thread(target=poll, daemon=True).start()
    return done.wait(timeout_s)


def test_probe_closes_the_breaker_once_the_cloud_answers() -> None:
    probe = ScriptedProbe(CloudUnavailableError("down"), CloudError("stub not healthy"), RuntimeError("bug"))
    breaker, health = _run_probe(probe)
    try:
        assert _wait_closed(breaker)
    finally:
        health.stop()
    assert probe.calls == 4 and health.pings == 4 and health.last_error == "RuntimeError: bug"
    assert breaker.snapshot().closes == 1


def test_probe_rejected_for_the_token_closes_the_breaker_so_the_next_call_says_so() -> None:
    breaker, health = _run_probe(ScriptedProbe(NotAuthorizedError("rejected the edge token")))
    try:
        assert _wait_closed(breaker)
    finally:
        health.stop()
    assert "edge token" in health.last_error


def test_probe_thread_stops() -> None:
    breaker = CircuitBreaker(60.0)
    health = HealthMonitor(breaker, ScriptedProbe(), ping_interval_s=60.0, ping_timeout_s=1.0).start()
    breaker.trip("down for a minute")
    health.stop(timeout_s=5.0)
    assert not health._thread.is_alive() and health.pings == 0


# ---- wire framing --------------------------------------------------------------------------------


def test_framing_of_small_and_multi_frame_messages() -> None:
    framing = GrpcFraming()
    token = ("triton-grpc-protocol-x-edge-token", "t" * 43)  # as measured: a 79-byte literal per call
    assert framing.request_bytes(100, [token]) == 100 + 5 + 9 + 18 + 79 + 26
    assert framing.response_bytes(100) == 100 + 5 + 9 + 37 + 13
    # 40 KB need three 16 KiB DATA frames, each with its 9-byte header.
    assert framing.response_bytes(40_000) == 40_000 + 5 + 27 + 37 + 13


@pytest.mark.parametrize(("length", "size"), [(0, 1), (126, 1), (127, 2), (254, 2), (255, 3), (16_510, 3)])
def test_hpack_string_lengths(length: int, size: int) -> None:
    framing = GrpcFraming()
    literal = framing.request_bytes(0, [("k", "v" * length)]) - framing.request_bytes(0)
    assert literal == 1 + 1 + 1 + size + length  # type, key length, key, value length, value
