"""Toy-model evaluation under torch, for Hugging Face checkpoints (training-time checks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from glimp_common.errors import ModelContractError
from toy.scoring import MAX_NEW_TOKENS, StepScore, reference_text, score_steps
from toy.task import Problem, prompt_text
from toy.vocab import CharCodec

BATCH = 200  # problems per forward pass; the models are tiny, memory is no concern


def load_checkpoint(folder: Path, device: str = "cpu") -> tuple[Any, CharCodec]:
    """The model (eval mode, on `device`) and the character codec of a toy checkpoint."""
    from transformers import LlamaForCausalLM

    tokenizer_file = Path(folder) / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ModelContractError(f"{tokenizer_file} is missing; {folder} is not a toy checkpoint")
    codec = CharCodec.from_tokenizer(Tokenizer.from_file(str(tokenizer_file)))
    model = LlamaForCausalLM.from_pretrained(str(folder)).to(device).eval()
    return model, codec


def greedy_solutions(model: Any, codec: CharCodec, problems: Sequence[Problem]) -> list[str]:
    """Greedy continuations of each problem's prompt, decoded up to EOS."""
    import torch

    out: list[str] = []
    for first in range(0, len(problems), BATCH):
        prompts = [codec.encode(prompt_text(p.question)) for p in problems[first : first + BATCH]]
        width = max(map(len, prompts))
        # Left padding: every row's prompt ends at the same column, where generation starts.
        ids = torch.full((len(prompts), width), codec.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        with torch.no_grad():
            generated = model.generate(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=False,
                eos_token_id=codec.eos_id,
                pad_token_id=codec.pad_id,
            )
        out.extend(codec.decode(row[width:].tolist()) for row in generated.cpu())
    return out


def teacher_forced_scores(model: Any, codec: CharCodec, problems: Sequence[Problem]) -> list[StepScore]:
    """Score every reference step of every problem (one right-padded forward per batch)."""
    import torch

    scores: list[StepScore] = []
    for first in range(0, len(problems), BATCH):
        batch = problems[first : first + BATCH]
        rows = [codec.encode(reference_text(p)) for p in batch]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), codec.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
        logits = logits.float().cpu().numpy()
        for problem, row, row_logits in zip(batch, rows, logits, strict=True):
            scores.extend(score_steps(problem, row, row_logits[: len(row)]))
    return scores


def torch_solutions_and_scores(
    folder: Path, problems: Sequence[Problem], *, device: str = "cpu"
) -> tuple[list[str], list[StepScore]]:
    model, codec = load_checkpoint(folder, device)
    return greedy_solutions(model, codec, problems), teacher_forced_scores(model, codec, problems)
