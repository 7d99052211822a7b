"""Device runtime: the ONNX SLM, the GlimpRouter step loop, routing policies, the cloud link.

Python API (the same power as `glimp run`)::

    from edge_client import EdgeRouter, EntropyThreshold, InProcessLLM, RouterConfig, StepSettings

    router = EdgeRouter.from_folders(
        "models/toy-pair/slm",
        llm=InProcessLLM.load("models/toy-pair/llm"),  # or connect("host:8001", token): the cloud
        config=RouterConfig(policy=EntropyThreshold(tau=0.9), steps=StepSettings(seed=0)),
    )
    result = router.answer("12+7*3-5")
    print(result.answer, f"{result.totals.cloud_steps}/{result.totals.steps} steps by the LLM")
    trace_json = result.to_json()  # per step: writer, entropy, tokens, bytes, time split

Multi-turn: `Conversation(router).ask(text)` turn after turn; each turn continues the SLM's KV
cache and the cloud context of the one before, sending only the new message (edge_client.conversation).

`connect(url, token)` returns the cloud link as `glimp run` uses it: retries, circuit breaker and
health monitor around the bare `TritonLLM` (edge_client/link/). Only the cloud link needs
`tritonclient` and `grpc`; they are imported when `connect` (or another link name) is first used,
so `import edge_client` works on a device without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge_client.calibrate import Calibration, calibrate
from edge_client.config import RouterConfig, StepSettings
from edge_client.console import StreamPrinter, render_summary
from edge_client.conversation import Conversation
from edge_client.errors import (
    CloudError,
    CloudRejectedError,
    CloudUnavailableError,
    CloudUnreachableError,
    ContextMismatchError,
    NotAuthorizedError,
)
from edge_client.in_process_llm import InProcessLLM
from edge_client.llm_backend import LLMBackend, LLMConversation
from edge_client.loop import Continuation, EdgeRouter, Turn
from edge_client.policies import (
    AlwaysCloud,
    AlwaysLocal,
    EntropyThreshold,
    RandomShare,
    RoutingPolicy,
    StepAverageEntropy,
    TargetShare,
    VerifyByScore,
    make_policy,
)
from edge_client.trace import AnswerRecord, Event, RunResult, StepRecord, Totals

if TYPE_CHECKING:  # for type checkers only
    from edge_client.link import (  # noqa: F401
        CloudLinkConfig,
        ResilienceConfig,
        ResilientLLM,
        RetryPolicy,
        TritonLLM,
        connect,
    )

_CLOUD_LINK_NAMES = ("CloudLinkConfig", "ResilienceConfig", "ResilientLLM", "RetryPolicy", "TritonLLM",
                     "connect")


def __getattr__(name: str) -> Any:
    # The gRPC link pulls in tritonclient and grpc: load it only when asked for.
    if name in _CLOUD_LINK_NAMES:
        from edge_client import link

        return getattr(link, name)
    raise AttributeError(f"module 'edge_client' has no attribute {name!r}")


# The cloud link's names are left out of __all__ so that `import *` does not pull in tritonclient.
__all__ = [
    "AlwaysCloud", "AlwaysLocal", "AnswerRecord", "Calibration", "CloudError", "CloudRejectedError",
    "CloudUnavailableError", "CloudUnreachableError", "ContextMismatchError", "Continuation", "Conversation",
    "EdgeRouter",
    "EntropyThreshold", "Event", "InProcessLLM", "LLMBackend", "LLMConversation", "NotAuthorizedError",
    "RandomShare", "RouterConfig", "RoutingPolicy", "RunResult", "StepAverageEntropy", "StepRecord",
    "StepSettings", "StreamPrinter", "TargetShare", "Totals", "Turn", "VerifyByScore", "calibrate",
    "make_policy", "render_summary",
]
