"""Settings of the step loop: how steps are sampled and bounded, who routes and who answers.

Defaults follow the paper's official code (temperature 0.6, top-p 0.95, 512 tokens per step,
a budget of 8192 step tokens, a final answer of up to 2048 tokens by the LLM, tau 0.9).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edge_client.policies import EntropyThreshold, RoutingPolicy
from glimp_common.errors import BadInputError
from onnx_lm import SamplingParams

ANSWER_WRITERS = ("llm", "slm", "none")


@dataclass(frozen=True)
class StepSettings:
    """How each reasoning step and the final answer are sampled and bounded."""

    temperature: float = 0.6  # steps and answer; 0 means greedy
    top_p: float = 0.95
    max_step_tokens: int = 512  # one step stops here if no delimiter came first
    budget_tokens: int = 8192  # thinking ends once the steps' tokens reach this
    answer_max_tokens: int = 2048  # the final answer after the end-of-thinking marker
    seed: int | None = None  # None: fresh randomness; an int: reproducible runs

    def __post_init__(self) -> None:
        for name in ("max_step_tokens", "budget_tokens", "answer_max_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BadInputError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.temperature, int | float) or not math.isfinite(self.temperature):
            raise BadInputError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        self.sampling  # noqa: B018 - SamplingParams validates temperature, top_p and seed

    @property
    def sampling(self) -> SamplingParams:
        """The sampling settings of every step (the probe token included) and of the answer."""
        return SamplingParams(temperature=float(self.temperature), top_p=float(self.top_p), seed=self.seed)


@dataclass(frozen=True)
class RouterConfig:
    """Everything the loop needs to know besides the two models."""

    policy: RoutingPolicy = field(default_factory=lambda: EntropyThreshold(0.9))
    steps: StepSettings = field(default_factory=StepSettings)
    answer_by: str = "llm"  # "llm" (the paper), "slm", or "none" (thinking only: calibration)
    delimiter: str | None = None  # None: the SLM manifest's step_delimiter
    system_prompt: str | None = None  # prepended as a system message when given

    def __post_init__(self) -> None:
        if not isinstance(self.policy, RoutingPolicy):
            raise BadInputError(
                f"policy must be a routing policy from edge_client.policies, got {type(self.policy).__name__}"
            )
        if self.answer_by not in ANSWER_WRITERS:
            raise BadInputError(
                f"answer_by must be one of {', '.join(ANSWER_WRITERS)}, got {self.answer_by!r}"
            )
        if self.delimiter is not None and not self.delimiter:
            raise BadInputError("the step delimiter must not be empty; leave it unset to use the model's")

    @property
    def needs_llm(self) -> bool:
        """Whether a run can call the LLM at all (then one must be given)."""
        return self.policy.may_use_llm or self.answer_by == "llm"
