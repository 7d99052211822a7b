"""`ServingConfig`: every default of serving the glimp LLM, in one place, and its config.pbtxt.

`glimp serve`'s flags, `RepositorySettings`, `ServerConfig`, `EngineConfig` and the Triton adapter
(`triton_model/1/model.py`, which reads the parameters back with `from_parameters`) all take their
defaults from this class. `render_pbtxt` writes the model's config.pbtxt through protobuf
`text_format` with Triton's own `ModelConfig` message (as PyTriton's `model_config/generator.py`
does), so the file always parses as Triton parses it.

This module must import in NVIDIA's Triton container, where only the base install is present:
`tritonclient` (which ships `model_config_pb2`) is imported only when rendering.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from glimp_common.errors import BadInputError
from onnx_lm.providers import resolve_name
from protos.contract import MODEL_NAME, REPLY_TENSOR, REQUEST_TENSOR

# Names of the model's config.pbtxt parameters (string values), read back by the adapter.
MODEL_DIR_KEY = "MODEL_DIR"
CACHE_BUDGET_KEY = "CACHE_BUDGET_BYTES"
IDLE_TTL_KEY = "IDLE_TTL_S"
PROVIDERS_KEY = "PROVIDERS"
INTRA_OP_THREADS_KEY = "INTRA_OP_THREADS"

_HEADER = (
    "# The glimp LLM on Triton's python backend: one serialized glimp.v1.StepRequest in, one\n"
    "# serialized glimp.v1.StepReply out (protos/edge_cloud_v1.proto). Rendered by `glimp serve`\n"
    "# from cloud_service/serving_config.py (ServingConfig); edit the parameters by hand when\n"
    "# deploying this folder elsewhere.\n"
)


@dataclass(frozen=True)
class ServingConfig:
    """How the `glimp_llm` model is served: its config.pbtxt parameters and where the server listens."""

    model_dir: str = "llm"  # exported LLM folder; relative paths are taken from the model's folder
    cache_budget_bytes: int = 2 << 30  # KV + text of every context together
    idle_ttl_s: float = 900.0  # a context unused this long is dropped
    providers: str = "auto"  # ONNX Runtime execution providers: "auto" or comma-separated cpu,cuda,tensorrt
    intra_op_threads: int = 0  # ONNX Runtime threads; 0: its default
    host: str = "127.0.0.1"  # address gRPC and metrics listen on ("0.0.0.0" for every interface)
    grpc_port: int = 8001
    metrics_port: int = 8002

    def __post_init__(self) -> None:
        if not self.model_dir:
            raise BadInputError("the model folder parameter must not be empty")
        if self.cache_budget_bytes <= 0:
            raise BadInputError(f"cache budget must be > 0 bytes, got {self.cache_budget_bytes}")
        if not self.idle_ttl_s > 0:
            raise BadInputError(f"idle TTL must be > 0 s, got {self.idle_ttl_s}")
        if self.intra_op_threads < 0:
            raise BadInputError(f"intra-op threads must be >= 0, got {self.intra_op_threads}")
        for name in self.providers.split(","):
            if name.strip() != "auto":
                resolve_name(name.strip())  # raises BadInputError naming the valid ones
        check_ports(self.grpc_port, self.metrics_port)

    @property
    def provider_names(self) -> tuple[str, ...]:
        """The providers asked for; () means "auto" (ONNX Runtime's best available)."""
        names = tuple(p.strip() for p in self.providers.split(",") if p.strip())
        return () if names in ((), ("auto",)) else names

    def parameters(self) -> dict[str, str]:
        """The model's config.pbtxt parameters (Triton parameters are strings)."""
        return {
            MODEL_DIR_KEY: self.model_dir,
            CACHE_BUDGET_KEY: str(self.cache_budget_bytes),
            IDLE_TTL_KEY: repr(float(self.idle_ttl_s)),
            PROVIDERS_KEY: self.providers,
            INTRA_OP_THREADS_KEY: str(self.intra_op_threads),
        }

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> ServingConfig:
        """The config a rendered config.pbtxt's parameters describe; missing ones take the defaults."""
        try:
            return cls(
                model_dir=parameters.get(MODEL_DIR_KEY, cls.model_dir),
                cache_budget_bytes=int(parameters.get(CACHE_BUDGET_KEY, cls.cache_budget_bytes)),
                idle_ttl_s=float(parameters.get(IDLE_TTL_KEY, cls.idle_ttl_s)),
                providers=parameters.get(PROVIDERS_KEY, cls.providers),
                intra_op_threads=int(parameters.get(INTRA_OP_THREADS_KEY, cls.intra_op_threads)),
            )
        except ValueError as exc:
            if isinstance(exc, BadInputError):
                raise
            raise BadInputError(f"a config.pbtxt parameter is not a number: {exc}") from None

    def model_config(self) -> Any:
        """Triton's `inference.ModelConfig` message for the glimp LLM (from tritonclient's protos)."""
        from tritonclient.grpc import model_config_pb2 as mc

        config = mc.ModelConfig(
            name=MODEL_NAME,
            backend="python",
            # No batching: each call continues its own cached context (batch 1, as the paper measures).
            max_batch_size=0,
            input=[mc.ModelInput(name=REQUEST_TENSOR, data_type=mc.TYPE_STRING, dims=[1])],
            output=[mc.ModelOutput(name=REPLY_TENSOR, data_type=mc.TYPE_STRING, dims=[1])],
            # One instance: the per-context KV cache lives in the instance's process, so more
            # instances would split it (route by context id first). KIND_CPU also runs ONNX
            # Runtime's CUDA provider: the python backend does not pin devices, ONNX Runtime picks
            # the GPU itself.
            instance_group=[mc.ModelInstanceGroup(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)],
        )
        for key, value in self.parameters().items():
            config.parameters[key].string_value = value
        return config

    def render_pbtxt(self) -> str:
        """config.pbtxt text for this config: a comment header and the `model_config()` message."""
        from google.protobuf import text_format

        config = self.model_config()
        body = text_format.MessageToString(config)
        if config.max_batch_size == 0:
            # proto3's text format leaves zero values out; "no batching" is worth showing (after name).
            name, rest = body.split("\n", 1)
            body = f"{name}\nmax_batch_size: 0\n{rest}"
        return _HEADER + body


def check_ports(grpc_port: int, metrics_port: int) -> None:
    """BadInputError unless both ports are in 1..65535 and differ."""
    for name, port in (("grpc_port", grpc_port), ("metrics_port", metrics_port)):
        if not 0 < port < 65536:
            raise BadInputError(f"{name} must be in 1..65535, got {port}")
    if grpc_port == metrics_port:
        raise BadInputError(f"gRPC and metrics ports must differ (both {grpc_port})")
