"""Toy-model evaluation of an exported ONNX folder under `onnx_lm` (the shipped pair).

One problem at a time, batch 1, with the KV cache: the way the edge runtime drives the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from glimp_common.errors import ModelContractError
from onnx_lm.session import CausalLM, SessionConfig
from toy.scoring import MAX_NEW_TOKENS, StepScore, reference_text, score_steps
from toy.task import Problem, prompt_text


def _encode(lm: CausalLM, text: str) -> list[int]:
    ids = lm.tokenizer.encode(text)
    if len(ids) != len(text):
        raise ModelContractError(
            f"{lm.folder} does not tokenize one token per character ({len(ids)} tokens for "
            f"{len(text)} characters): it is not a toy-pair model"
        )
    return ids


def greedy_solution(lm: CausalLM, problem: Problem) -> str:
    """Greedy continuation of the problem's prompt up to EOS (or MAX_NEW_TOKENS)."""
    cache = lm.new_cache()
    logits = lm.prefill(cache, _encode(lm, prompt_text(problem.question)))
    eos, tokens = set(lm.manifest.eos_token_ids), []
    for _ in range(MAX_NEW_TOKENS):
        token = int(np.argmax(logits))
        if token in eos:
            break
        tokens.append(token)
        logits = lm.decode_one(cache, token)
    return lm.tokenizer.decode(tokens)


def onnx_solutions_and_scores(
    folder: Path, problems: Sequence[Problem], *, threads: int = 1
) -> tuple[list[str], list[StepScore]]:
    lm = CausalLM.load(folder, SessionConfig(providers="cpu", intra_op_threads=threads))
    solutions = [greedy_solution(lm, p) for p in problems]
    scores: list[StepScore] = []
    for problem in problems:
        ids = _encode(lm, reference_text(problem))
        scores.extend(score_steps(problem, ids, lm.forward(lm.new_cache(), ids)))
    return solutions, scores
