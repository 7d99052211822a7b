"""Triton python-backend adapter for the glimp LLM: parse, call the engine, answer.

All logic lives in `cloud_service.engines.onnx` (installed in the Python environment the stub runs:
the first `python3` on the server's PATH, or the model's EXECUTION_ENV_PATH). This file only
maps tensors to bytes and errors to Triton codes: `InvalidRequest` -> INVALID_ARG,
`RequestCancelled` -> CANCELLED, anything else -> INTERNAL (logged with its traceback).

Queue time: the python backend does not tell a model how long a request waited in Triton's
queue, so `ServerTimings.queue_s` is the time from `execute` being called to the engine taking
the request (earlier requests of the same batch, the engine lock). Triton's own queue time is
on the metrics port as `nv_inference_queue_duration_us` (per model, cumulative).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from cloud_service.engines.onnx import Engine, EngineConfig, RequestCancelled
from cloud_service.errors import InvalidRequest
from cloud_service.metrics import EngineMetrics
from cloud_service.serving_config import ServingConfig
from onnx_lm import SessionConfig
from protos.contract import REPLY_TENSOR, REQUEST_TENSOR

log = logging.getLogger("glimp_llm")


class TritonPythonModel:
    """The `glimp_llm` model."""

    def initialize(self, args: dict[str, str]) -> None:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        serving = ServingConfig.from_parameters(params)  # missing parameters take its defaults
        model_dir = Path(serving.model_dir)
        if not model_dir.is_absolute():
            model_dir = Path(args["model_repository"]) / model_dir
        session = SessionConfig(
            providers=serving.provider_names or "auto",
            intra_op_threads=serving.intra_op_threads,
            device_id=int(args.get("model_instance_device_id") or 0),
        )
        engine_config = EngineConfig(serving.cache_budget_bytes, serving.idle_ttl_s)
        self.engine = Engine.load(model_dir, engine_config, session)
        self.metrics = EngineMetrics(pb_utils, args["model_name"])
        log.info("glimp_llm serving %s on %s, cache budget %d bytes, idle TTL %.0f s",
                 model_dir, self.engine.lm.provider.short_name,
                 engine_config.cache_budget_bytes, engine_config.idle_ttl_s)

    def execute(self, requests: list[Any]) -> list[Any]:
        received_s = time.monotonic()
        responses = [self._respond(request, received_s) for request in requests]
        self.metrics.update(self.engine.stats())
        return responses

    def _respond(self, request: Any, received_s: float) -> Any:
        try:
            data = _request_bytes(request)
            reply = self.engine.handle_bytes(data, received_s=received_s, is_cancelled=request.is_cancelled)
        except InvalidRequest as exc:
            return _error(str(exc), pb_utils.TritonError.INVALID_ARG)
        except RequestCancelled as exc:
            return _error(str(exc), pb_utils.TritonError.CANCELLED)
        except Exception as exc:  # a bug or a model failure: the caller must not see a traceback
            log.exception("glimp_llm failed on a request")
            return _error(f"internal error in glimp_llm ({type(exc).__name__}); see the server log",
                          pb_utils.TritonError.INTERNAL)
        reply_tensor = pb_utils.Tensor(REPLY_TENSOR, np.array([reply], dtype=np.object_))
        return pb_utils.InferenceResponse(output_tensors=[reply_tensor])

    def finalize(self) -> None:
        log.info("glimp_llm unloading: %s", self.engine.stats())


def _request_bytes(request: Any) -> bytes:
    tensor = pb_utils.get_input_tensor_by_name(request, REQUEST_TENSOR)
    if tensor is None:
        raise InvalidRequest(f"input {REQUEST_TENSOR} is missing; send one serialized StepRequest in it")
    array = tensor.as_numpy()
    if array.size != 1:
        raise InvalidRequest(f"input {REQUEST_TENSOR} must hold exactly one element, got {array.size}")
    value = array.reshape(-1)[0]
    return bytes(value) if isinstance(value, bytes | bytearray) else str(value).encode("utf-8")


def _error(message: str, code: int) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))
