"""`LMContext`: a model's KV cache kept in step with a transcript given as *text*.

Text is the interchange between edge and cloud (their tokenizers may differ). Each side
re-tokenizes the transcript it is handed and reuses its cache up to the longest common token
prefix: re-tokenizing at a step boundary can change the last token or two, never more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from onnx_lm.sampling import log_softmax
from onnx_lm.session import CausalLM


@dataclass(frozen=True)
class SyncStats:
    """What one `sync` cost."""

    reused_tokens: int  # cache tokens kept (longest common prefix)
    prefill_tokens: int  # tokens fed to the model to catch up
    total_tokens: int  # tokens of the transcript after the sync


@dataclass(frozen=True)
class TailScore:
    """What scoring the tail of a text found and cost (SCORE, generate-then-verify baselines)."""

    mean_logprob: float  # natural log, temperature 1
    scored_tokens: int
    reused_tokens: int  # KV tokens kept from the cache
    prefill_tokens: int  # tokens run through the model


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    limit = min(len(a), len(b))
    for i in range(limit):
        if a[i] != b[i]:
            return i
    return limit


class LMContext:
    """A model plus the token ids and KV cache of one transcript, and its next-token logits."""

    def __init__(self, lm: CausalLM) -> None:
        self.lm = lm
        self.cache = lm.new_cache()
        self.token_ids: list[int] = []
        self._next_logits: NDArray[np.float32] | None = None  # logits after token_ids[-1]

    @property
    def length(self) -> int:
        return len(self.token_ids)

    @property
    def nbytes(self) -> int:
        """Bytes of KV cache held for this transcript."""
        return self.cache.nbytes

    @property
    def next_logits(self) -> NDArray[np.float32]:
        if self._next_logits is None:
            raise RuntimeError("no logits yet: sync a transcript first")
        return self._next_logits

    def sync(self, text: str) -> SyncStats:
        """Make the cache hold exactly `text`, re-feeding only what differs from what it holds."""
        target = self.lm.tokenizer.encode(text)
        if not target:
            raise ValueError("cannot sync to an empty transcript")
        keep = common_prefix_length(self.token_ids, target)
        if keep == len(target) and keep == len(self.token_ids) and self._next_logits is not None:
            return SyncStats(keep, 0, keep)
        # The last token must be fed again when nothing new follows it: its logits are needed.
        keep = min(keep, len(target) - 1)
        self._next_logits = None  # stale from here on, also if the prefill below fails
        self.cache.truncate(keep)
        self.token_ids = self.token_ids[:keep]
        self._next_logits = self.lm.prefill(self.cache, target[keep:])
        self.token_ids = target
        return SyncStats(keep, len(target) - keep, len(target))

    def score_tail(self, text: str, tail_chars: int) -> TailScore:
        """Mean log-probability of the tokens covering the last `tail_chars` characters of `text`.

        One forward call over the cached prefix. The scored tokens are those of `text` that
        differ from the tokens of `text` without its tail (re-tokenizing may merge one token
        across the cut). Leaves the context holding `text`. Raises ValueError when the tail
        covers no token after the first.
        """
        full = self.lm.tokenizer.encode(text)
        head = self.lm.tokenizer.encode(text[: len(text) - tail_chars])
        first = max(1, common_prefix_length(head, full))  # index of the first scored token
        if first >= len(full):
            raise ValueError("the scored text covers no token: score a longer tail")
        # Keep the cache up to the token before `first`: its logits predict the first scored token.
        keep = min(common_prefix_length(self.token_ids, full), first - 1)
        self._next_logits = None
        self.cache.truncate(keep)
        self.token_ids = full[:keep]
        # rows[j] are the logits after full[keep + j], i.e. they predict full[keep + j + 1].
        rows = self.lm.forward(self.cache, full[keep:-1])  # keep <= first - 1 < len(full) - 1
        self.token_ids = full[:-1]
        logprobs = [float(log_softmax(rows[p - keep - 1])[full[p]]) for p in range(first, len(full))]
        self.append_token(full[-1])  # leaves fresh next-token logits
        return TailScore(float(np.mean(logprobs)), len(logprobs), keep, len(full) - keep)

    def append_token(self, token_id: int) -> NDArray[np.float32]:
        """Feed one generated token; return the logits that follow it."""
        self._next_logits = self.lm.decode_one(self.cache, token_id)
        self.token_ids.append(token_id)
        return self._next_logits

    def reset(self) -> None:
        self.cache.reset()
        self.token_ids = []
        self._next_logits = None
