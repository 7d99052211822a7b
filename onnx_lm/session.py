"""`CausalLM`: one exported model folder under ONNX Runtime, driven token by token.

Generation is two named phases over an explicit `KVCache`: `prefill` (many tokens, one call)
and `decode_one` (one token). Both are the same `forward` with IO binding: inputs are bound
from numpy, the cache is bound as OrtValues, outputs stay on the session's device.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from glimp_common.errors import BadInputError, ModelContractError, ProviderError
from onnx_lm import io_names
from onnx_lm.kv_cache import KVCache
from onnx_lm.manifest import Manifest
from onnx_lm.providers import ProviderChoice, candidates
from onnx_lm.text_codec import TextCodec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionConfig:
    """How the ONNX Runtime session is built."""

    providers: str | tuple[str, ...] = "auto"  # "auto", "cpu", "cuda", "tensorrt" or a tuple of them
    intra_op_threads: int = 0  # 0: ONNX Runtime's default (one per physical core)
    device_id: int = 0  # which GPU, when a GPU provider is chosen
    # Idle ORT threads spin while waiting for work: fastest on an idle CPU, but on a saturated
    # one (a busy laptop) turning it off measured up to 1.9x faster decoding.
    spin_wait: bool = True

    def __post_init__(self) -> None:
        if self.intra_op_threads < 0:
            raise BadInputError(f"intra_op_threads must be >= 0, got {self.intra_op_threads}")


class CausalLM:
    """An exported causal LM with a KV cache, on the fastest execution provider that works."""

    def __init__(
        self, folder: Path, manifest: Manifest, session: ort.InferenceSession, choice: ProviderChoice,
        device_id: int = 0,
    ) -> None:
        self.folder = Path(folder)
        self.manifest = manifest
        self.tokenizer = TextCodec.load(folder, manifest)
        self.provider = choice
        self._session = session
        self._device_id = device_id
        self._signature = io_names.check_signature(
            [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()],
            manifest.kv.num_layers, manifest.graph,
        )

    @classmethod
    def load(cls, folder: Path | str, config: SessionConfig | None = None) -> CausalLM:
        """Load `folder` (an `export` output); the first provider whose real run succeeds is kept.

        Raises ModelContractError when the folder or graph does not fit, ProviderError when no
        requested provider can run it.
        """
        config = config or SessionConfig()
        folder = Path(folder)
        manifest = Manifest.load(folder)
        onnx_path = folder / manifest.onnx_file
        if not onnx_path.is_file():
            raise ModelContractError(f"{onnx_path} is missing; re-export the model with `glimp export`")
        failures = []
        for choice in candidates(config.providers):
            try:
                lm = cls(folder, manifest, _open_session(onnx_path, choice, config), choice, config.device_id)
                lm._prove()
                log.info("loaded %s on %s", folder, choice.name)
                return lm
            except ModelContractError:
                raise
            except Exception as exc:  # a provider that fails to build or run is skipped, not fatal
                log.warning("execution provider %s failed for %s: %s", choice.name, folder, exc)
                failures.append(f"{choice.short_name}: {exc}")
        raise ProviderError(f"no execution provider could run {onnx_path}: " + "; ".join(failures))

    @property
    def session_providers(self) -> list[str]:
        """The providers the ONNX Runtime session runs with, first one first."""
        return list(self._session.get_providers())

    def new_cache(self) -> KVCache:
        return KVCache(self.manifest.kv, self.provider.device, self._device_id)

    def prefill(self, cache: KVCache, token_ids: Sequence[int]) -> NDArray[np.float32]:
        """Feed `token_ids` after the cache in one call; return next-token logits [vocab]."""
        if not token_ids:
            raise ValueError("prefill needs at least one token")
        return self.forward(cache, token_ids)[-1]

    def decode_one(self, cache: KVCache, token_id: int) -> NDArray[np.float32]:
        """Feed one token; return next-token logits [vocab]."""
        return self.forward(cache, [token_id])[-1]

    def forward(self, cache: KVCache, token_ids: Sequence[int]) -> NDArray[np.float32]:
        """Run the graph on `token_ids` after `cache`, extend the cache, return logits [n, vocab]."""
        past, n = cache.length, len(token_ids)
        if past + n > self.manifest.max_context_tokens:
            raise BadInputError(
                f"{past + n} tokens exceed the model's context of {self.manifest.max_context_tokens}; "
                "shorten the question or lower the token budget"
            )
        binding = self._session.io_binding()
        self._bind_inputs(binding, cache, token_ids)
        # get_outputs() returns outputs in bind order: logits first, then (key, value) per layer.
        binding.bind_output(io_names.LOGITS, "cpu")
        for key_name, value_name in self._signature.present_outputs():
            binding.bind_output(key_name, self.provider.device, self._device_id)
            binding.bind_output(value_name, self.provider.device, self._device_id)
        self._session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        cache.replace(list(outputs[1::2]), list(outputs[2::2]), past + n)
        return np.asarray(outputs[0].numpy()[0], dtype=np.float32)

    def _bind_inputs(self, binding: ort.IOBinding, cache: KVCache, token_ids: Sequence[int]) -> None:
        past, n = cache.length, len(token_ids)
        binding.bind_cpu_input(io_names.INPUT_IDS, np.asarray([token_ids], dtype=np.int64))
        binding.bind_cpu_input(io_names.ATTENTION_MASK, np.ones((1, past + n), dtype=np.int64))
        if self._signature.has_position_ids:
            positions = np.arange(past, past + n, dtype=np.int64)[None, :]
            binding.bind_cpu_input(io_names.POSITION_IDS, positions)
        for layer, (key_name, value_name) in enumerate(self._signature.past_inputs()):
            binding.bind_ortvalue_input(key_name, cache.keys[layer])
            binding.bind_ortvalue_input(value_name, cache.values[layer])

    def _prove(self) -> None:
        """A real two-call run (prefill + one decode): a provider counts only once this works."""
        cache = self.new_cache()
        logits = self.prefill(cache, [0, 1])
        logits = self.decode_one(cache, int(np.argmax(logits)))
        if logits.shape != (self.manifest.vocab_size,):
            raise ModelContractError(
                f"logits have shape {logits.shape}, but the manifest says vocab_size "
                f"{self.manifest.vocab_size}; re-export the model"
            )
        if self._session.get_providers()[0] != self.provider.name:
            raise ProviderError(f"session fell back to {self._session.get_providers()[0]}")


_CORRUPT_MODEL_MARKERS = ("INVALID_PROTOBUF", "Load model", "protobuf parsing failed")


def _open_session(onnx_path: Path, choice: ProviderChoice, config: SessionConfig) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if config.intra_op_threads:
        options.intra_op_num_threads = config.intra_op_threads
    if not config.spin_wait:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # warnings from fallback attempts are ours to report, not ORT's
    provider_options = [{"device_id": config.device_id} if p != "CPUExecutionProvider" else {}
                        for p in choice.session_providers]
    try:
        return ort.InferenceSession(
            str(onnx_path), sess_options=options,
            providers=list(choice.session_providers), provider_options=provider_options,
        )
    except Exception as exc:
        if any(marker in str(exc) for marker in _CORRUPT_MODEL_MARKERS):
            raise ModelContractError(
                f"{onnx_path} is not a valid ONNX model ({str(exc).splitlines()[0]}); re-export it"
            ) from exc
        raise
