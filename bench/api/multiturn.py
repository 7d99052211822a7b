"""Turn 2 (and 3) of a 3-turn conversation through the endpoint, with the held contexts reused vs not.

    .venv/bin/python -m bench.api.multiturn [--qwen3] [--json bench/results/api/multiturn.json]

The same conversation is played twice through `glimp api`'s app on a real tritonserver: once
with conversations held (`--max-conversations 4`: turn N+1 continues the SLM's KV and the cloud
context, only the new message goes up), once with none held (0: every turn re-creates both from
the whole history). Greedy decoding, so both plays write the same text and only the cost differs.
Per turn it prints the bytes sent up, the cloud's prefill tokens (what it had to read again) and
the SLM's, from `usage.glimp`. `--qwen3` adds a second pair: a random Qwen3 on the real Qwen3
tokenizer and chat template as both SLM and cloud LLM (its template renders earlier turns and
drops their reasoning), where the cloud's KV reuse shows; the toy's prompt template renders only
the last question, so there only the bytes differ.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from bench.api.common import CPU, MODEL, TOY_LLM, TOY_SLM, client, endpoint, triton_cloud
from edge_client import EntropyThreshold, RouterConfig, StepSettings
from onnx_lm import CausalLM

TOY_QUESTIONS = ("12+7*3-5", "3*4+1", "9-2*3")
QWEN_QUESTIONS = ("What is 2+2? Answer with the number only, then say how sure you are.",
                  "And times three? Show the multiplication you did.", "Minus five? One line, please.")
# An app's instructions, resent by OpenAI-style clients with every turn (the toy template ignores
# it, the cloud still receives it whenever a context is created).
SYSTEM = ("You are a careful arithmetic assistant inside a note-taking app. Work step by step, keep every "
          "intermediate result exact, and give the final number on its own line. Never guess: if the "
          "expression is malformed, say so in one sentence.")
TOY_CONFIG = RouterConfig(policy=EntropyThreshold(0.2), steps=StepSettings(temperature=0.0, seed=0))
QWEN_CONFIG = RouterConfig(policy=EntropyThreshold(1.0), steps=StepSettings(
    temperature=0.0, max_step_tokens=8, budget_tokens=24, answer_max_tokens=6, seed=0))


def play(base_url: str, questions: tuple[str, ...], system: str | None) -> list[dict[str, Any]]:
    """The conversation, turn by turn, resending the history as an OpenAI client does."""
    api, turns = client(base_url), []
    messages = [{"role": "system", "content": system}] if system else []
    for question in questions:
        messages.append({"role": "user", "content": question})
        reply = api.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
        split = (reply.usage.model_extra or {})["glimp"] if reply.usage else {}
        answer = reply.choices[0].message.content or ""
        messages.append({"role": "assistant", "content": answer})
        turns.append({"question": question, "answer": answer, "bytes_up": split["bytes"]["up"],
                      "resync_up": split["bytes"]["resync_up"], "cloud_calls": split["cloud_calls"],
                      "cloud_prefill_tokens": split["cloud_tokens"]["input"],
                      "prompt_tokens": reply.usage.prompt_tokens if reply.usage else 0,
                      "slm_reused_tokens": split["conversation"]["slm_reused_tokens"],
                      "continued": split["conversation"]["continued"]})
    return turns


def measure(name: str, slm_dir: Path, llm_dir: Path, config: RouterConfig,
            questions: tuple[str, ...], system: str | None = None) -> dict[str, Any]:
    slm = CausalLM.load(slm_dir, CPU)
    plays = {}
    with triton_cloud(llm_dir) as cloud:
        for mode, held in (("reuse", 4), ("no_reuse", 0)):
            with endpoint(slm, cloud.llm, config, max_conversations=held) as (url, _):
                plays[mode] = play(url, questions, system)
    same = [a["answer"] == b["answer"] for a, b in zip(plays["reuse"], plays["no_reuse"], strict=True)]
    return {"pair": name, "system_prompt": system, "questions": list(questions), "same_answers": same,
            **plays}


def report(figure: dict[str, Any]) -> str:
    system = f"a {len(figure['system_prompt'])}-character system prompt" if figure["system_prompt"] \
        else "no system prompt"
    lines = [f"== {figure['pair']}: a {len(figure['questions'])}-turn conversation, {system}, reuse vs "
             f"no reuse (same answers each turn: {figure['same_answers']})",
             f"{'turn':>4} {'mode':>9} {'bytes up':>9} {'cloud prefill':>14} {'cloud calls':>12} "
             f"{'SLM prompt':>11} {'SLM reused':>11}"]
    for index in range(len(figure["questions"])):
        for mode in ("reuse", "no_reuse"):
            t = figure[mode][index]
            lines.append(f"{index + 1:>4} {mode:>9} {t['bytes_up']:>9} {t['cloud_prefill_tokens']:>14} "
                         f"{t['cloud_calls']:>12} {t['prompt_tokens']:>11} {t['slm_reused_tokens']:>11}")
        r, n = figure["reuse"][index], figure["no_reuse"][index]
        if index:
            lines.append(f"     turn {index + 1}: bytes up {r['bytes_up']} vs {n['bytes_up']} "
                         f"({r['bytes_up'] / max(1, n['bytes_up']):.2f}x), cloud prefill "
                         f"{r['cloud_prefill_tokens']} vs {n['cloud_prefill_tokens']} tokens")
    return "\n".join(lines)


def qwen3_pair(work: Path) -> Path:
    """A random Qwen3 on the real Qwen3 tokenizer and template (export.real_tokenizers), exported."""
    from export.hf_export import export_checkpoint
    from export.real_tokenizers import build_checkpoint

    checkpoint = build_checkpoint("qwen3", work / "checkpoint")
    export_checkpoint(checkpoint, work / "onnx")
    return work / "onnx"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--qwen3", action="store_true",
                        help="also the real-tokenizer Qwen3 pair (exports one)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    toy = "toy pair (toy SLM, toy LLM on tritonserver)"
    figures = [measure(toy, TOY_SLM, TOY_LLM, TOY_CONFIG, TOY_QUESTIONS),
               measure(toy, TOY_SLM, TOY_LLM, TOY_CONFIG, TOY_QUESTIONS, SYSTEM)]
    if args.qwen3:
        with tempfile.TemporaryDirectory(prefix="glimp-qwen3-") as work:
            qwen = qwen3_pair(Path(work))
            figures.append(measure("random Qwen3, real tokenizer and template (SLM and LLM on tritonserver)",
                                   qwen, qwen, QWEN_CONFIG, QWEN_QUESTIONS, SYSTEM))
    for figure in figures:
        print(report(figure), flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
