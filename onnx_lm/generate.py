"""Decoding a span of text (a reasoning step, an answer) from an `LMContext`.

One loop for every writer: the edge SLM, the in-process LLM and the Triton model all call
`decode_until`. The token that completes a stop string is never fed to the model (no wasted
forward pass); the next `sync` feeds the delimiter as part of the transcript.

Text is decoded with `TextCodec.decode_complete`: a character whose bytes are split across
tokens is neither streamed nor stored until its last byte arrives. A span that ends (at
`max_tokens` or EOS) inside a character drops the incomplete bytes from its text rather than
extending past the cap: the cap is also what keeps a write inside the context window (the cloud
passes the room left), so it is never exceeded. The dropped bytes' tokens that were fed to the
model leave the KV at the next `sync`, whose longest common prefix ends before them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from glimp_common.errors import BadInputError
from onnx_lm.context import LMContext
from onnx_lm.sampling import SamplingParams, entropy_nats, sample_token

TextCallback = Callable[[str], None]


class StopReason(StrEnum):
    STOP_STRING = "stop_string"  # a stop string (the step delimiter, an end marker) was written
    EOS = "eos"  # the model ended the sequence
    MAX_TOKENS = "max_tokens"  # the span's token limit was reached


@dataclass(frozen=True)
class StopCriteria:
    """When a span ends. Stop strings are cut from the returned text."""

    stop_strings: tuple[str, ...] = ()
    max_tokens: int = 512

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise BadInputError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if any(not s for s in self.stop_strings):
            raise BadInputError("stop strings must not be empty")


@dataclass
class Generation:
    """A decoded span."""

    text: str  # without the stop string / EOS
    token_ids: list[int] = field(default_factory=list)  # every sampled token, stop token included
    stop_reason: StopReason = StopReason.MAX_TOKENS
    stop_string: str | None = None  # which stop string ended it
    decode_s: float = 0.0  # time spent sampling and running the model
    entropies: list[float] = field(default_factory=list)  # H of each sampled token's distribution, nats

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


def decode_until(
    ctx: LMContext,
    params: SamplingParams,
    stop: StopCriteria,
    rng: np.random.Generator,
    *,
    first_token: int | None = None,
    on_text: TextCallback | None = None,
    record_entropy: bool = False,
) -> Generation:
    """Sample tokens after the context until a stop string, EOS or `stop.max_tokens`.

    `first_token`, when given, is used as the first sampled token (the router's probe token,
    drawn from the same distribution with the same settings): it is not sampled again.
    `on_text` receives the text as it becomes final (never a prefix of a stop string).
    `record_entropy` fills `Generation.entropies` (the step-average-entropy policy needs it).
    """
    started = time.perf_counter()
    eos_ids = set(ctx.lm.manifest.eos_token_ids)
    gen = Generation(text="")
    streamed = 0
    logits = ctx.next_logits
    token = first_token if first_token is not None else sample_token(logits, params, rng)
    while True:
        if record_entropy:
            gen.entropies.append(entropy_nats(logits))
        if token in eos_ids:
            gen.token_ids.append(token)
            gen.stop_reason = StopReason.EOS
            break
        gen.token_ids.append(token)
        gen.text = ctx.lm.tokenizer.decode_complete(gen.token_ids)
        hit = _find_stop(gen.text, stop.stop_strings)
        if hit is not None:
            gen.text, gen.stop_string = gen.text[: hit[0]], hit[1]
            gen.stop_reason = StopReason.STOP_STRING
            break
        if gen.num_tokens >= stop.max_tokens:
            gen.stop_reason = StopReason.MAX_TOKENS
            break
        streamed = _stream(gen.text, streamed, stop.stop_strings, on_text)
        logits = ctx.append_token(token)
        token = sample_token(logits, params, rng)
    if gen.stop_reason != StopReason.STOP_STRING:
        gen.text = ctx.lm.tokenizer.decode_complete([t for t in gen.token_ids if t not in eos_ids])
    if on_text is not None and len(gen.text) > streamed:
        on_text(gen.text[streamed:])
    gen.decode_s = time.perf_counter() - started
    return gen


def _find_stop(text: str, stop_strings: tuple[str, ...]) -> tuple[int, str] | None:
    """Earliest stop string in `text`, as (index, string)."""
    hits = [(text.find(s), s) for s in stop_strings if s in text]
    return min(hits) if hits else None


def _stream(text: str, streamed: int, stop_strings: tuple[str, ...], on_text: TextCallback | None) -> int:
    """Emit the part of `text` that can no longer turn into a stop string; return chars emitted."""
    if on_text is None:
        return streamed
    held = max((_overlap(text, s) for s in stop_strings), default=0)
    final = len(text) - held
    if final > streamed:
        on_text(text[streamed:final])
        return final
    return streamed


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `stop`."""
    for size in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:size]):
            return size
    return 0
