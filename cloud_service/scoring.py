"""SCORE: the mean log-probability the model gives the tail of a text (generate-then-verify baselines).

The scored tokens are those of the full text that differ from the tokens of the text without
its tail: they cover the tail, plus a boundary token when re-tokenizing merges across the cut.
All of them are scored in one forward call over the context's cached KV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnx_lm import LMContext
from onnx_lm.context import common_prefix_length
from onnx_lm.sampling import log_softmax


@dataclass(frozen=True)
class Score:
    """What scoring a tail cost and found."""

    mean_logprob: float  # natural log, temperature 1
    scored_tokens: int
    reused_tokens: int  # KV tokens kept from the context's cache
    prefill_tokens: int  # tokens run through the model


def score_tail(ctx: LMContext, text: str, tail_chars: int) -> Score:
    """Score the tokens covering the last `tail_chars` characters of `text` under `ctx`'s model.

    Leaves `ctx` holding `text` (a consistent cache with fresh next-token logits).
    Raises ValueError when the tail covers no token after the first.
    """
    tokenizer = ctx.lm.tokenizer
    full = tokenizer.encode(text)
    head = tokenizer.encode(text[: len(text) - tail_chars])
    first = max(1, common_prefix_length(head, full))  # index of the first scored token
    if first >= len(full):
        raise ValueError("the scored text covers no token: score a longer tail")
    # Keep the cache up to the token before `first`: its logits predict the first scored token.
    keep = min(common_prefix_length(ctx.token_ids, full), first - 1)
    ctx.cache.truncate(keep)
    ctx.token_ids = full[:keep]
    # rows[j] are the logits after full[keep + j], i.e. they predict full[keep + j + 1].
    rows = ctx.lm.forward(ctx.cache, full[keep:-1])
    ctx.token_ids = full[:-1]
    targets = np.arange(first, len(full))
    logprobs = [float(log_softmax(rows[p - keep - 1])[full[p]]) for p in targets]
    # Feeding the last token through the context's own API leaves its logits valid.
    ctx.append_token(full[-1])
    return Score(
        mean_logprob=float(np.mean(logprobs)), scored_tokens=len(logprobs),
        reused_tokens=keep, prefill_tokens=len(full) - keep,
    )
