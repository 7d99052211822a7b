"""What a run cost in money at the cloud's per-token prices, and what it would have cost all in the cloud.

The cloud bills input (prefill) and output (generated) tokens, each at a price per million.
A routed run pays for what the LLM really did: the tokens it fed to catch up with the
transcript (prompt, SLM-written steps) and the tokens it wrote (its steps, the answer).

The all-cloud estimate is one LLM generation of the same answer: it reads the prompt once and
writes every completion token (the reasoning steps and the answer), with the cloud keeping its
KV cache throughout. Token counts of text the SLM wrote are the SLM tokenizer's: a proxy for the
LLM's, exact when both sides share a tokenizer (the toy pair, a Qwen3 pair). The estimate leaves
out what the router spends that one generation would not (rewritten drafts, probes).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from edge_client.trace import RunResult
from glimp_common.env import env_float
from glimp_common.errors import BadInputError

PRICE_IN_ENV = "GLIMP_PRICE_IN_PER_M"
PRICE_OUT_ENV = "GLIMP_PRICE_OUT_PER_M"
CURRENCY_ENV = "GLIMP_CURRENCY"


@dataclass(frozen=True)
class Prices:
    """The cloud LLM's prices per million tokens, in `currency` (e.g. USD)."""

    input_per_m: float  # per million prefill (input) tokens
    output_per_m: float  # per million generated (output) tokens
    currency: str = "USD"

    def __post_init__(self) -> None:
        for name in ("input_per_m", "output_per_m"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise BadInputError(f"the price {name} must be a finite number >= 0, got {value!r}")

    @classmethod
    def from_env(cls) -> Prices | None:
        """Prices from GLIMP_PRICE_IN_PER_M / GLIMP_PRICE_OUT_PER_M; None unless one is set."""
        price_in, price_out = env_float(PRICE_IN_ENV), env_float(PRICE_OUT_ENV)
        if price_in is None and price_out is None:
            return None
        return cls(price_in or 0.0, price_out or 0.0, os.environ.get(CURRENCY_ENV) or "USD")

    def of(self, input_tokens: float, output_tokens: float) -> float:
        """Money for `input_tokens` read and `output_tokens` written."""
        return (input_tokens * self.input_per_m + output_tokens * self.output_per_m) / 1e6


@dataclass(frozen=True)
class RunCost:
    """A run's cloud tokens and their price, beside the all-cloud estimate of the same answer."""

    cloud_input_tokens: int  # the LLM's prefill over every call
    cloud_output_tokens: int  # tokens the LLM generated (its steps, the answer)
    cost: float  # what this run cost
    all_cloud_input_tokens: int  # the prompt, read once
    all_cloud_output_tokens: int  # every completion token (steps and answer)
    all_cloud_cost: float  # what one LLM generation of the same answer would have cost
    currency: str

    @property
    def saved(self) -> float:
        """all_cloud_cost - cost (negative when routing cost more)."""
        return self.all_cloud_cost - self.cost


def cloud_tokens(result: RunResult) -> tuple[int, int]:
    """(input, output) tokens the LLM really processed in `result`."""
    prefill = sum(step.llm_prefill_tokens for step in result.steps) + result.answer_record.llm_prefill_tokens
    return prefill, result.totals.llm_tokens


def completion_tokens(result: RunResult) -> int:
    """Tokens of the reasoning steps (each by its writer's tokenizer) and of the answer."""
    return sum(step.step_tokens for step in result.steps) + result.answer_record.tokens


def prompt_tokens_of(result: RunResult) -> int:
    """The prompt's SLM tokens: what the SLM fed before the first step (its context starts empty)."""
    return result.steps[0].slm_prefill_tokens if result.steps else 0


def run_cost(result: RunResult, prices: Prices, prompt_tokens: int | None = None) -> RunCost:
    """The money split of `result` (see the module doc); `prompt_tokens` defaults to `prompt_tokens_of`."""
    prompt_tokens = prompt_tokens_of(result) if prompt_tokens is None else prompt_tokens
    cloud_in, cloud_out = cloud_tokens(result)
    all_out = completion_tokens(result)
    return RunCost(cloud_in, cloud_out, prices.of(cloud_in, cloud_out), prompt_tokens, all_out,
                   prices.of(prompt_tokens, all_out), prices.currency)
