"""Prove that an exported ONNX model computes what the Hugging Face checkpoint computes.

Two checks, after minGPT's test against Hugging Face: (a) the largest |logit difference| between
transformers (torch, fp32, eval) and ONNX Runtime over the prefill of a random prompt, under a
stated tolerance; (b) greedy decoding for a number of steps through ONNX Runtime *with* past KV
gives the very tokens transformers picks *without* a cache (`use_cache=False`), so the exported
cache path is proven against the plain forward pass.

Cheap by construction: ONNX Runtime decodes first (one prefill, then one token a call), and one
transformers forward over the prompt and those tokens scores every step at once (a causal model's
logits at position i see only the tokens before it), instead of one growing forward per step.

ONNX Runtime is driven directly here (a short loop over the optimum graph's inputs) so that the
export does not depend on the runtime package above it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from glimp_common.errors import ModelContractError

logger = logging.getLogger(__name__)

GREEDY_STEPS = 32
PROMPT_TOKENS = 16
# Below this many parameters one thread is faster than several on both sides: the matrices are
# too small to split, and on a busy machine the threads only spin against each other.
SINGLE_THREAD_BELOW_PARAMS = 20_000_000


@dataclass(frozen=True)
class ParityPolicy:
    """What a graph of one precision must meet against transformers fp32."""

    abs_tolerance: float | None = None  # largest |logit diff| accepted, in logit units
    rel_tolerance: float | None = None  # ... as a fraction of the largest |reference logit|
    require_greedy: bool = True  # every greedy token must agree

    def tolerance(self, ref_logits: NDArray[np.float32]) -> float | None:
        """The absolute tolerance for these reference logits; None: not enforced."""
        if self.rel_tolerance is not None:
            return self.rel_tolerance * max(1.0, float(np.abs(ref_logits).max()))
        return self.abs_tolerance


# fp32: both sides compute in fp32, only kernel order differs: logits within 1e-3, greedy identical.
# fp16: 11-bit mantissas move logits by about 1% of their range and flip near-tied argmaxes,
#       so the logit bound is enforced and the greedy figures are reported.
# int8 / int4: quantization costs accuracy by design: every figure is reported, none enforced.
POLICIES = {
    "float32": ParityPolicy(abs_tolerance=1e-3),
    "float16": ParityPolicy(rel_tolerance=1e-2, require_greedy=False),
    "int8": ParityPolicy(require_greedy=False),
    "int4": ParityPolicy(require_greedy=False),
}
FP32_LOGIT_TOLERANCE = POLICIES["float32"].abs_tolerance

CPU = "CPUExecutionProvider"
_ORT_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass(frozen=True)
class ParityResult:
    """Figures of one parity check of an ONNX graph against transformers fp32."""

    precision: str  # "float32", "float16" or "int8": which policy applied
    max_abs_logit_diff: float  # over every position of the prompt prefill
    max_abs_logit_diff_decode: float  # over every decode step (both sides fed the same tokens)
    tolerance: float | None  # bound on max_abs_logit_diff; None: reported, not enforced
    greedy_required: bool  # whether every greedy token had to agree
    greedy_steps: int  # tokens decoded on each side
    greedy_matched: int  # leading greedy tokens identical on both sides
    top1_agreed: int  # decode steps whose argmax agrees given the same prefix
    prompt_tokens: int
    provider: str  # ONNX Runtime execution provider the graph ran on
    check_s: float  # wall time of the whole check
    reference: str = "transformers fp32 eval, use_cache=False, one forward over prompt + ORT's greedy tokens"

    @property
    def greedy_identical(self) -> bool:
        return self.greedy_matched == self.greedy_steps

    @property
    def passed(self) -> bool:
        """True when every figure this precision's policy enforces is met."""
        within = self.tolerance is None or self.max_abs_logit_diff <= self.tolerance
        return within and (self.greedy_identical or not self.greedy_required)

    def to_dict(self) -> dict[str, Any]:
        """Plain figures for `manifest.parity` and the CLI."""
        return {**asdict(self), "greedy_identical": self.greedy_identical, "passed": self.passed}

    def summary(self) -> str:
        """One line: the figures a user reads."""
        tol = "not enforced" if self.tolerance is None else f"tolerance {self.tolerance:.3g}"
        return (
            f"max |logit diff| {self.max_abs_logit_diff:.3g} (prefill, {tol}), "
            f"{self.max_abs_logit_diff_decode:.3g} (decode); greedy {self.greedy_matched}/"
            f"{self.greedy_steps} tokens identical, top-1 agreement {self.top1_agreed}/{self.greedy_steps}"
        )


class OrtDecoder:
    """A bare ONNX Runtime loop over an optimum `text-generation-with-past` graph, batch 1.

    The KV cache is the list of `present.*` outputs of the last call, fed back as `past_key_values.*`.
    """

    def __init__(self, onnx_path: Path, providers: tuple[str, ...] = (CPU,), *, threads: int = 0) -> None:
        self.session = open_session(onnx_path, providers, threads=threads)
        self.provider = str(self.session.get_providers()[0])
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.past_names = [name for name in inputs if name.startswith("past_key_values.")]
        missing = {"input_ids", "attention_mask"} - set(inputs)
        if missing or not self.past_names:
            raise ModelContractError(
                f"{onnx_path} lacks {sorted(missing) or 'past_key_values.* inputs'}: it is not a "
                "text-generation-with-past export; re-export with `glimp export`"
            )
        self.has_position_ids = "position_ids" in inputs
        first = inputs[self.past_names[0]]
        self.kv_dtype = _ORT_FLOAT_TYPES.get(first.type, np.float32)
        self.kv_heads, self.head_dim = int(first.shape[1]), int(first.shape[3])
        self.past: list[NDArray[Any]] = [self._empty_kv() for _ in self.past_names]
        self.length = 0  # tokens held in the cache

    def _empty_kv(self) -> NDArray[Any]:
        # [batch, kv_heads, past_seq, head_dim] with past_seq = 0
        return np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=self.kv_dtype)

    def forward(self, ids: list[int]) -> NDArray[np.float32]:
        """Run `ids` after the cached tokens; return fp32 logits [len(ids), vocab]."""
        new = len(ids)
        feeds: dict[str, Any] = {
            "input_ids": np.array([ids], dtype=np.int64),
            "attention_mask": np.ones((1, self.length + new), dtype=np.int64),
        }
        if self.has_position_ids:
            feeds["position_ids"] = np.arange(self.length, self.length + new, dtype=np.int64)[None]
        feeds.update(zip(self.past_names, self.past, strict=True))
        logits, *present = self.session.run(None, feeds)
        self.past = present
        self.length += new
        return np.asarray(logits[0], dtype=np.float32)


def open_session(onnx_path: Path, providers: tuple[str, ...] = (CPU,), *, threads: int = 0) -> Any:
    """An ONNX Runtime session (`threads` 0: ORT's default); a missing or corrupt file raises
    ModelContractError."""
    import onnxruntime as ort

    if not Path(onnx_path).is_file():
        raise ModelContractError(f"{onnx_path} does not exist; re-export the model with `glimp export`")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the CPU EP warns about every fp16 fallback; keep the log readable
    options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(onnx_path), options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises several private exception types for bad files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelContractError(
            f"{onnx_path} is not a loadable ONNX model ({first_line[:200]}); "
            "it may be truncated or corrupt: re-export with `glimp export --force`"
        ) from exc


def load_reference(checkpoint_dir: Path) -> Any:
    """The checkpoint under transformers, fp32, eval mode: the reference every check uses."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(checkpoint_dir), dtype=torch.float32)
    return model.eval()


def _torch_logits(model: Any, ids: list[int]) -> NDArray[np.float32]:
    """Logits [len(ids), vocab] of a plain forward pass without any cache."""
    import torch

    with torch.no_grad():
        out = model(torch.tensor([ids], dtype=torch.long), use_cache=False)
    return out.logits[0].float().numpy()


def random_prompt(vocab_size: int, length: int, *, seed: int) -> list[int]:
    """Random token ids: parity must hold for any input, not only for text."""
    rng = np.random.default_rng(seed)
    return [int(t) for t in rng.integers(0, vocab_size, size=length)]


@dataclass(frozen=True)
class _DecodeFigures:
    greedy_matched: int  # leading greedy tokens identical on both sides
    top1_agreed: int  # steps whose argmax agrees, both sides given the same prefix
    max_abs_logit_diff: float  # over every step: both sides always see the same prefix


def _ort_greedy(
    decoder: OrtDecoder, prefill_logits: NDArray[np.float32], steps: int
) -> tuple[list[int], NDArray[np.float32]]:
    """ONNX Runtime's own greedy decode through its KV cache: `steps` tokens and, for each, the
    logits [steps, vocab] it was picked from (the first from the prefill)."""
    tokens: list[int] = []
    step_logits = [prefill_logits[-1]]
    for step in range(steps):
        tokens.append(int(step_logits[-1].argmax()))
        if step + 1 < steps:  # the last token's own successor is never compared
            step_logits.append(decoder.forward([tokens[-1]])[-1])
    return tokens, np.stack(step_logits)


def _compare_steps(
    tokens: list[int], ort_steps: NDArray[np.float32], ref_steps: NDArray[np.float32]
) -> _DecodeFigures:
    """Figures of ONNX Runtime's greedy tokens against transformers' logits on the same prefix.

    Row i of both logit tables follows the prompt and ONNX Runtime's first i tokens. Up to the
    first disagreement the two greedy decodes are therefore the same sequence, so the leading
    agreeing rows count identical greedy tokens; after it, the shared prefix keeps every row's
    figures comparable (top-1 agreement, logit difference).
    """
    agrees = ref_steps.argmax(axis=-1) == np.asarray(tokens)
    matched = int(np.argmin(agrees)) if not agrees.all() else len(tokens)
    return _DecodeFigures(matched, int(agrees.sum()), float(np.abs(ref_steps - ort_steps).max()))


@dataclass(frozen=True)
class OnnxRun:
    """What ONNX Runtime computed for a parity check, kept so the graph's session can be closed
    before transformers loads (an export then never holds both models at once)."""

    onnx_path: Path
    precision: str
    prompt: list[int]
    prefill_logits: NDArray[np.float32]  # [prompt_tokens, vocab]
    tokens: list[int]  # ONNX Runtime's own greedy tokens through its KV cache
    step_logits: NDArray[np.float32]  # [steps, vocab]: the logits each token was picked from
    provider: str
    onnx_s: float


def _foreign_onnx(onnx_path: Path, what: str) -> ModelContractError:
    """The one error for an ONNX file whose logits show it was exported from another checkpoint."""
    return ModelContractError(
        f"{onnx_path} gives {what}: the ONNX file does not belong to this checkpoint; "
        "re-export with `glimp export --force`"
    )


def run_onnx(
    onnx_path: Path,
    vocab_size: int,
    *,
    precision: str = "float32",
    steps: int = GREEDY_STEPS,
    prompt_tokens: int = PROMPT_TOKENS,
    seed: int = 0,
    providers: tuple[str, ...] = (CPU,),
    threads: int = 0,
) -> OnnxRun:
    """One prefill of a random prompt, then `steps` greedy tokens through the graph's KV cache.

    Raises ModelContractError when the file cannot be loaded or its logits are not `vocab_size` wide.
    """
    start = time.perf_counter()
    decoder = OrtDecoder(onnx_path, providers, threads=threads)
    prompt = random_prompt(vocab_size, prompt_tokens, seed=seed)
    prefill = decoder.forward(prompt)
    if prefill.shape[-1] != vocab_size:
        raise _foreign_onnx(onnx_path, f"logits of {prefill.shape[-1]} ids, the checkpoint has {vocab_size}")
    tokens, step_logits = _ort_greedy(decoder, prefill, steps)
    return OnnxRun(onnx_path, precision, prompt, prefill, tokens, step_logits, decoder.provider,
                   time.perf_counter() - start)


def score(model: Any, run: OnnxRun) -> ParityResult:
    """Score an ONNX run against transformers (fp32, no cache) under its precision's policy.

    One forward over the prompt and ONNX Runtime's tokens gives the reference logits of the prefill
    and of every decode step at once (row i sees only the tokens before it). Never raises on a
    mismatch (see `require_parity`).
    """
    start = time.perf_counter()
    policy = POLICIES[run.precision]
    with _torch_threads(threads_for(_parameter_count(model))):
        ref = _torch_logits(model, run.prompt + run.tokens[:-1])
    n = len(run.prompt)
    ref_prefill, ref_steps = ref[:n], ref[n - 1 :]
    if ref_prefill.shape != run.prefill_logits.shape:
        raise _foreign_onnx(run.onnx_path, f"logits of shape {run.prefill_logits.shape}, transformers "
                            f"{ref_prefill.shape}")
    decoded = _compare_steps(run.tokens, run.step_logits, ref_steps)
    result = ParityResult(
        precision=run.precision,
        max_abs_logit_diff=float(np.abs(run.prefill_logits - ref_prefill).max()),
        max_abs_logit_diff_decode=decoded.max_abs_logit_diff,
        tolerance=policy.tolerance(ref_prefill),
        greedy_required=policy.require_greedy,
        greedy_steps=len(run.tokens),
        greedy_matched=decoded.greedy_matched,
        top1_agreed=decoded.top1_agreed,
        prompt_tokens=n,
        provider=run.provider,
        check_s=round(run.onnx_s + time.perf_counter() - start, 3),
    )
    logger.info("parity of %s (%s): %s", run.onnx_path, run.precision, result.summary())
    return result


def check_parity(
    checkpoint_dir: Path,
    onnx_path: Path,
    *,
    precision: str = "float32",
    steps: int = GREEDY_STEPS,
    prompt_tokens: int = PROMPT_TOKENS,
    seed: int = 0,
    providers: tuple[str, ...] = (CPU,),
    reference_model: Any = None,
) -> ParityResult:
    """Measure parity of `onnx_path` against the checkpoint under `precision`'s policy.

    Never raises on a mismatch (see `require_parity`). `reference_model` reuses a transformers
    model already loaded. Raises ModelContractError when the ONNX file cannot be loaded or does
    not fit the checkpoint.
    """
    model = reference_model if reference_model is not None else load_reference(checkpoint_dir)
    run = run_onnx(
        onnx_path, int(model.config.vocab_size), precision=precision, steps=steps,
        prompt_tokens=prompt_tokens, seed=seed, providers=providers,
        threads=threads_for(_parameter_count(model)),
    )
    return score(model, run)


def _parameter_count(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def threads_for(parameters: int) -> int:
    """1 for small models, whose matmuls are too small to split (threads only contend); else 0."""
    return 1 if parameters < SINGLE_THREAD_BELOW_PARAMS else 0



@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def require_parity(result: ParityResult, onnx_path: Path) -> None:
    """Raise ModelContractError with the figures when `result` did not pass."""
    if not result.passed:
        raise ModelContractError(
            f"parity check failed for {onnx_path}: {result.summary()}; the export does not reproduce "
            "transformers: check the optimum/transformers versions, or export with --no-parity to inspect"
        )
