"""The `usage` object of a completion: OpenAI's token counts plus `usage.glimp`, the edge/cloud split.

OpenAI's fields: `prompt_tokens` (the prompt as the SLM renders and tokenizes it),
`completion_tokens` (reasoning steps, each counted by its writer's tokenizer, plus the answer),
`total_tokens`, and `completion_tokens_details.reasoning_tokens` (the steps).

`usage.glimp` (an extension; clients that do not know it ignore it):
  steps            {"edge", "cloud", "degraded"}: steps by writer ("degraded": the SLM wrote a step
                   the cloud should have, because the cloud was unreachable)
  degraded_steps   the same count as steps.degraded, flat for a quick check
  degraded         true when any step or the answer was written without the cloud it needed
  answer_writer    "cloud" | "edge" | "degraded" | "none"
  answer_tokens    tokens of the answer (completion_tokens = reasoning_tokens + answer_tokens)
  step_writers     writer of each step, in order
  entropy_nats     first-token entropy of each step (what the threshold policy compares)
  cloud_tokens     {"input", "output"}: tokens the cloud LLM read (prefill) and wrote
  slm_tokens, wasted_tokens   tokens the SLM sampled, and those thrown away (probes, drafts)
  bytes            {"up", "down", "resync_up"}: serialized bytes over the link
  cloud_calls      LLM calls made
  time_s           {"edge_compute_s", "network_s", "cloud_queue_s", "cloud_compute_s", "wall_s"}
  conversation     {"continued", "slm_reused_tokens"}: whether this turn continued a conversation the
                   device holds (edge_client.api.conversations), and the prompt tokens the SLM did not
                   have to feed again
  cost             null without prices; else {"currency", "cost", "all_cloud_cost", "saved",
                   "all_cloud_input_tokens", "all_cloud_output_tokens"}: the money at the cloud's
                   prices, and the estimate of one all-cloud generation of the same answer
                   (edge_client.cost says how it is made)
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from edge_client.cost import Prices, cloud_tokens, completion_tokens, run_cost
from edge_client.trace import RunResult


def is_degraded(result: RunResult) -> bool:
    """Whether any part of the run was written without the cloud it was meant for."""
    return result.totals.degraded_steps > 0 or result.answer_writer == "degraded"


def usage_of(
    result: RunResult, prompt_tokens: int, prices: Prices | None, continued: bool = False,
) -> dict[str, Any]:
    """The completion's `usage` (see the module doc)."""
    reasoning = sum(step.step_tokens for step in result.steps)
    completion = completion_tokens(result)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
        "completion_tokens_details": {"reasoning_tokens": reasoning},
        "glimp": {**split_of(result, prompt_tokens, prices),
                  "conversation": _conversation(result, prompt_tokens, continued)},
    }


def split_of(result: RunResult, prompt_tokens: int, prices: Prices | None) -> dict[str, Any]:
    t = result.totals
    cloud_in, cloud_out = cloud_tokens(result)
    return {
        "steps": {"edge": t.edge_steps, "cloud": t.cloud_steps, "degraded": t.degraded_steps},
        "degraded_steps": t.degraded_steps,
        "degraded": is_degraded(result),
        "answer_writer": result.answer_writer,
        "answer_tokens": result.answer_record.tokens,
        "step_writers": [step.writer for step in result.steps],
        "entropy_nats": [round(step.entropy_nats, 4) for step in result.steps],
        "cloud_tokens": {"input": cloud_in, "output": cloud_out},
        "slm_tokens": t.slm_tokens,
        "wasted_tokens": t.wasted_tokens,
        "bytes": {"up": t.traffic.bytes_up, "down": t.traffic.bytes_down,
                  "resync_up": t.traffic.resync_bytes_up},
        "cloud_calls": t.traffic.calls,
        "time_s": asdict(t.timing),
        "cost": _cost(result, prompt_tokens, prices),
    }


def _conversation(result: RunResult, prompt_tokens: int, continued: bool) -> dict[str, Any]:
    fed = result.steps[0].slm_prefill_tokens if result.steps else prompt_tokens
    return {"continued": continued, "slm_reused_tokens": max(0, prompt_tokens - fed)}


def _cost(result: RunResult, prompt_tokens: int, prices: Prices | None) -> dict[str, Any] | None:
    if prices is None:
        return None
    cost = run_cost(result, prices, prompt_tokens)
    return {"currency": cost.currency, "cost": cost.cost, "all_cloud_cost": cost.all_cloud_cost,
            "saved": cost.saved, "all_cloud_input_tokens": cost.all_cloud_input_tokens,
            "all_cloud_output_tokens": cost.all_cloud_output_tokens}
