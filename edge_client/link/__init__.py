"""The cloud link: the edge's way to the large model on Triton, one job per module.

- `transport`: `CloudLinkConfig`, the gRPC channel and one raw KServe call (`TritonLink`), the
  mapping of gRPC status codes to `edge_client.errors`;
- `kserve`: one StepRequest into a KServe ModelInferRequest, one StepReply out of the response;
- `delta`: `TritonConversation`, the server's view of a context, the delta it sends, the one
  full resend after a mismatch;
- `closer`: `BackgroundCloser`, the worker that sends finished contexts' CLOSE off the answer's path;
- `triton`: `TritonLLM`, the bare `LLMBackend` over one link;
- `retry`, `breaker`, `health`: which errors are retried, the circuit breaker, the monitor that
  pings the cloud while the breaker is open;
- `resilient`: `ResilientLLM` (all of the above around `TritonLLM`) and `connect(url, token)`.

Importing this package imports grpc and tritonclient; `import edge_client` alone does not.
"""

from edge_client.link.breaker import BreakerSnapshot, BreakerState, CircuitBreaker
from edge_client.link.delta import TritonConversation
from edge_client.link.health import HealthMonitor
from edge_client.link.kserve import build_infer_request, parse_infer_response
from edge_client.link.resilient import ResilienceConfig, ResilientConversation, ResilientLLM, connect
from edge_client.link.retry import RetryPolicy, retryable
from edge_client.link.transport import CloudLinkConfig, Exchange, TritonLink, map_rpc_error
from edge_client.link.triton import TritonLLM

__all__ = [
    "BreakerSnapshot", "BreakerState", "CircuitBreaker", "CloudLinkConfig", "Exchange", "HealthMonitor",
    "ResilienceConfig", "ResilientConversation", "ResilientLLM", "RetryPolicy", "TritonConversation",
    "TritonLLM", "TritonLink", "build_infer_request", "connect", "map_rpc_error", "parse_infer_response",
    "retryable",
]
