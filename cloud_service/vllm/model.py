"""Triton python-backend model `glimp_llm` on vLLM: decoupled, one coroutine per request.

The shape of Triton's own vllm_backend (src/model.py): vLLM's V1 `AsyncLLM` is created in
`initialize` on an asyncio loop that runs in a thread of its own; `execute` hands each request to
that loop as a coroutine and returns at once, so requests of every context run concurrently and
vLLM batches them (continuous batching, chunked prefill, automatic prefix caching). The contract is
the ONNX engine's, byte for byte: input REQUEST (one serialized glimp.v1.StepRequest, BYTES [1]),
output REPLY (one serialized glimp.v1.StepReply), the same refusals with the same codes
(InvalidRequest -> INVALID_ARG, RequestCancelled -> CANCELLED, anything else -> INTERNAL). Being
decoupled, each request is answered by one response sent with TRITONSERVER_RESPONSE_COMPLETE_FINAL;
a unary ModelInfer on a decoupled model gets UNIMPLEMENTED from Triton, so clients use the streaming
RPC (ModelStreamInfer).

All contract logic lives in `cloud_service.vllm.engine` (installed in the environment the stub
runs: the first `python3` on the server's PATH). Parameters (config.pbtxt, all strings):
MODEL_DIR (HF checkpoint folder, relative to this model's folder), KV_CACHE_BYTES
(vLLM's kv_cache_memory_bytes), MAX_MODEL_LEN (0: the checkpoint's), MAX_NUM_SEQS, DTYPE,
PROMPT_TEMPLATE / STEP_DELIMITER (the ONNX manifest's fields, for folders without a chat
template), MAX_CONTEXTS, TEXT_BUDGET_BYTES, IDLE_TTL_S.
"""

from __future__ import annotations

import contextlib
import locale
import os

# The stub's embedded Python starts with an ASCII preferred encoding even under LANG=C.UTF-8, and
# `import vllm` then fails inside torch (UnicodeDecodeError: 'ascii' codec). Fix it before any import.
with contextlib.suppress(locale.Error):  # a system without the C.UTF-8 locale keeps its own
    locale.setlocale(locale.LC_CTYPE, "C.UTF-8")

import asyncio  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402
from google.protobuf.message import DecodeError  # noqa: E402

from cloud_service.errors import InvalidRequest  # noqa: E402
from cloud_service.vllm.contexts import TableLimits  # noqa: E402
from cloud_service.vllm.engine import EngineSettings, PromptFormat, RequestCancelled, VllmEngine  # noqa: E402
from cloud_service.vllm.metrics import VllmMetrics  # noqa: E402
from cloud_service.vllm.scheduler_gauges import SchedulerGauges  # noqa: E402
from protos import edge_cloud_v1_pb2 as pb  # noqa: E402
from protos.contract import REPLY_TENSOR, REQUEST_TENSOR, SUPPORTED_PROTOCOL_VERSIONS  # noqa: E402

log = logging.getLogger("glimp_llm")

_START_TIMEOUT_S = 900.0  # vLLM start (model load, KV allocation); torch.compile is off (enforce_eager)
_STOP_TIMEOUT_S = 30.0


def _params(model_config: dict[str, Any]) -> dict[str, str]:
    return {key: value["string_value"] for key, value in model_config.get("parameters", {}).items()}


class TritonPythonModel:
    """The `glimp_llm` model, vLLM engine."""

    def initialize(self, args: dict[str, str]) -> None:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(config):
            raise pb_utils.TritonModelException(
                "the vllm engine needs model_transaction_policy { decoupled: true } in config.pbtxt")
        params = _params(config)
        model_dir = Path(params.get("MODEL_DIR", "llm"))
        if not model_dir.is_absolute():
            model_dir = Path(args["model_repository"]) / model_dir
        # vLLM's CPU platform lets this legacy variable (whole GiB) override kv_cache_memory_bytes:
        # the repository's budget is the one that holds.
        if os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None) is not None:
            log.warning("glimp_llm: VLLM_CPU_KVCACHE_SPACE ignored; KV_CACHE_BYTES sets the KV space")
        kv_cache_bytes = int(params.get("KV_CACHE_BYTES", str(1 << 30)))
        # Engine processes spawned from here die with their parent (see cloud_service/vllm/hygiene.py);
        # DIE_WITH_PARENT=0 turns that off (only to show what it prevents).
        os.environ["GLIMP_DIE_WITH_PARENT"] = "0" if params.get("DIE_WITH_PARENT", "1") == "0" else "1"
        from vllm import SamplingParams
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.async_llm import AsyncLLM

        max_model_len = int(params.get("MAX_MODEL_LEN", "0")) or None
        speculative = _speculative_config(params, Path(args["model_repository"]))
        engine_args = AsyncEngineArgs(
            model=str(model_dir), tokenizer=str(model_dir),
            dtype=params.get("DTYPE", "auto"),
            max_model_len=max_model_len,
            max_num_seqs=int(params.get("MAX_NUM_SEQS", "64")),
            kv_cache_memory_bytes=kv_cache_bytes,
            block_size=32,  # the CPU attention backend takes multiples of 32 only
            enable_prefix_caching=True,  # the KV half of the context cache
            enforce_eager=True,  # no torch.compile: minutes of start-up on these CPUs
            seed=0,
            speculative_config=speculative,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="glimp-vllm-loop", daemon=True)
        self._thread.start()

        self.scheduler = SchedulerGauges()

        async def start() -> Any:
            return AsyncLLM.from_engine_args(engine_args, stat_loggers=[self.scheduler.stat_logger()])

        started = time.perf_counter()
        self._llm = asyncio.run_coroutine_threadsafe(start(), self._loop).result(_START_TIMEOUT_S)
        window = int(self._llm.model_config.max_model_len)
        tokenizer = self._load_tokenizer(model_dir)

        def make_sampling(*, max_tokens: int, temperature: float, top_p: float, seed: int | None,
                          stop: list[str] | None, prompt_logprobs: int | None = None) -> Any:
            return SamplingParams(
                n=1, max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed,
                stop=stop, include_stop_str_in_output=False, prompt_logprobs=prompt_logprobs,
                output_kind=RequestOutputKind.DELTA,
            )

        settings = EngineSettings(
            window_tokens=window,
            prompt=PromptFormat(
                prompt_template=params.get("PROMPT_TEMPLATE", "{question}"),
                step_delimiter=params.get("STEP_DELIMITER", "\n"),
            ),
            table=TableLimits(
                max_contexts=int(params.get("MAX_CONTEXTS", "65536")),
                text_budget_bytes=int(params.get("TEXT_BUDGET_BYTES", str(256 << 20))),
                idle_ttl_s=float(params.get("IDLE_TTL_S", "900")),
            ),
        )
        self.engine = VllmEngine(self._llm, tokenizer, make_sampling, settings)
        self.metrics = VllmMetrics(pb_utils, args["model_name"])
        asyncio.run_coroutine_threadsafe(self.engine.warm_up(), self._loop).result(_START_TIMEOUT_S)
        log.info("glimp_llm (vllm) serving %s: window %d tokens, KV %.0f MiB, started in %.1f s",
                 model_dir, window, kv_cache_bytes / (1 << 20), time.perf_counter() - started)

    @staticmethod
    def _load_tokenizer(model_dir: Path) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(model_dir))

    def execute(self, requests: list[Any]) -> None:
        received_s = time.monotonic()
        for request in requests:
            asyncio.run_coroutine_threadsafe(self._serve(request, received_s), self._loop)
        return None

    def _update_metrics(self) -> None:
        try:
            self.metrics.update(self.engine.stats(), self.scheduler.snapshot())
        except Exception:  # metrics must never fail a call
            log.warning("glimp_llm: updating the metrics failed", exc_info=True)

    async def _serve(self, request: Any, received_s: float) -> None:
        sender = request.get_response_sender()
        data = b""
        try:
            data = _request_bytes(request)
            reply = await self.engine.handle_bytes(data, received_s=received_s,
                                                   is_cancelled=sender.is_cancelled,
                                                   on_piece=lambda piece: _send_piece(sender, piece))
            response = _reply_response(reply)
        except InvalidRequest as exc:
            response = _refusal(data, str(exc), pb_utils.TritonError.INVALID_ARG)
        except RequestCancelled as exc:
            log.info("glimp_llm: a call was cancelled by its client; nothing committed")
            response = _refusal(data, str(exc), pb_utils.TritonError.CANCELLED)
        except Exception as exc:  # a bug or an engine failure: the caller must not see a traceback
            log.exception("glimp_llm failed on a request")
            response = _refusal(data, f"internal error in glimp_llm ({type(exc).__name__}); see the server "
                                "log", pb_utils.TritonError.INTERNAL)
        self._update_metrics()  # after every call: the calls still running, the counters so far
        try:
            sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception:  # the client is gone (cancelled stream): nothing left to tell it
            log.warning("glimp_llm could not send a reply", exc_info=True)

    def finalize(self) -> None:
        log.info("glimp_llm (vllm) unloading: %s", self.engine.stats() if hasattr(self, "engine") else "-")
        llm = getattr(self, "_llm", None)
        if llm is not None:
            # AsyncLLM.shutdown stops EngineCore and its workers (they also die with this process:
            # see hygiene.py); run it on the loop that owns the engine's output task.
            async def stop() -> None:
                llm.shutdown()

            try:
                asyncio.run_coroutine_threadsafe(stop(), self._loop).result(_STOP_TIMEOUT_S)
            except Exception:
                log.warning("vLLM shutdown failed", exc_info=True)
        if getattr(self, "_loop", None) is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_STOP_TIMEOUT_S)


def _speculative_config(params: dict[str, str], model_folder: Path) -> dict[str, Any] | None:
    """vLLM's speculative_config from SPECULATIVE ("", "ngram", "draft") and SPECULATIVE_TOKENS."""
    kind, tokens = params.get("SPECULATIVE", ""), int(params.get("SPECULATIVE_TOKENS", "3"))
    if not kind:
        return None
    if kind == "ngram":  # propose the tokens that followed the latest matching n-gram of the prompt
        return {"method": "ngram", "num_speculative_tokens": tokens, "prompt_lookup_max": 4,
                "prompt_lookup_min": 2}
    if kind == "draft":
        return {"model": str(model_folder / "draft"), "num_speculative_tokens": tokens}
    raise pb_utils.TritonModelException(f"SPECULATIVE must be '', 'ngram' or 'draft', got {kind!r}")


def _request_bytes(request: Any) -> bytes:
    tensor = pb_utils.get_input_tensor_by_name(request, REQUEST_TENSOR)
    if tensor is None:
        raise InvalidRequest(f"input {REQUEST_TENSOR} is missing; send one serialized StepRequest in it")
    array = tensor.as_numpy()
    if array.size != 1:
        raise InvalidRequest(f"input {REQUEST_TENSOR} must hold exactly one element, got {array.size}")
    value = array.reshape(-1)[0]
    return bytes(value) if isinstance(value, bytes | bytearray) else str(value).encode("utf-8")


def _reply_response(reply: bytes) -> Any:
    return pb_utils.InferenceResponse(
        output_tensors=[pb_utils.Tensor(REPLY_TENSOR, np.array([reply], dtype=np.object_))])


def _send_piece(sender: Any, piece: Any) -> None:
    """A streamed call's piece: a non-final response (decoupled), the final reply follows. A piece
    that cannot be sent (the client went away) is dropped: the cancel check stops the call."""
    try:
        sender.send(_reply_response(pb.StepReply(piece=piece).SerializeToString()), flags=0)
    except Exception:
        log.debug("glimp_llm: a piece could not be sent", exc_info=True)


def _refusal(data: bytes, message: str, code: int) -> Any:
    """A refused call: in band for a version-2 request (over the stream an error response carries
    only its message, no status code: StepReply.refused keeps the code), the error for version 1."""
    if refusal_version(data) not in IN_BAND_VERSIONS:
        return _error(message, code)
    # grpc.StatusCode values; pb_utils' error codes exist only once the stub runs, not at import.
    grpc_codes = {pb_utils.TritonError.INVALID_ARG: 3, pb_utils.TritonError.CANCELLED: 1}
    refused = pb.Refusal(grpc_code=grpc_codes.get(code, _GRPC_INTERNAL), message=message)
    return _reply_response(pb.StepReply(refused=refused).SerializeToString())


def refusal_version(data: bytes) -> int:
    """The protocol version a request claims; 0 when it does not parse."""
    try:
        return int(pb.StepRequest.FromString(data).protocol_version)
    except DecodeError:
        return 0


IN_BAND_VERSIONS = tuple(v for v in SUPPORTED_PROTOCOL_VERSIONS if v >= 2)  # an unknown version: the error
_GRPC_INTERNAL = 13


def _error(message: str, code: int) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))
