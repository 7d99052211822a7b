"""Random checkpoints on the real tokenizers, scripted to write a known reasoning chain.

Random weights over a 152k vocabulary almost never write the step delimiter, so the models are
*scripted*: every attention output and feed-forward projection is zeroed, which leaves the
residual stream equal to the current token's embedding, and the input and output embeddings are
set so that each scripted token's successor wins by a wide logit margin (a bigram model in a real
Qwen3 / Llama architecture, exported and run like any other). Unscripted tokens embed to zero and
give flat logits, so a run that leaves the script shows at once.

The scripts use each tokenizer's real ids (checked against the tokenizer when built), including
merged delimiters: Qwen and Llama 3 both merge ".\\n\\n" into 382; ":\\n\\n" is 1447 (Qwen) / 1473.
"""

from __future__ import annotations

import logging
from pathlib import Path

MARGIN = 8.0  # successor logit = MARGIN * sqrt(hidden): far above every other (entropy ~ 0)

# token id -> successor id; EXPECTED_TEXT checks them against each tokenizer when it is built.
QWEN3_SCRIPT: dict[int, int] = {
    198: 5338,  # "\n" (end of "<think>\n") -> "First"
    5338: 3019,  # "First" -> " step"
    3019: 382,  # " step" -> ".\n\n" (one merged token: the step ends inside it)
    382: 12209,  # -> "Then"
    12209: 803,  # "Then" -> " more"
    803: 1447,  # " more" -> ":\n\n"
    1447: 151668,  # ":\n\n" -> "</think>"
    151668: 271,  # "</think>" -> "\n\n"
    271: 19,  # "\n\n" -> "4"
    19: 17,  # "4" -> "2"
    17: 151645,  # "2" -> <|im_end|>
    82912: 246,  # first bytes of "龘" -> its last byte (a character split over two tokens)
    246: 151645,
}
LLAMA3_SCRIPT: dict[int, int] = {
    271: 5451,  # "\n\n" (end of the assistant header) -> "First"
    5451: 3094,  # "First" -> " step"
    3094: 382,  # " step" -> ".\n\n"
    382: 12487,  # -> "Then"
    12487: 810,  # "Then" -> " more"
    810: 1473,  # " more" -> ":\n\n"
    1473: 128009,  # ":\n\n" -> <|eot_id|> (as the SLM: thinking ends at EOS)
    29: 2983,  # ">" (end of "</think>" as plain text) -> "42"
    2983: 128009,  # "42" -> <|eot_id|>
}
SCRIPTS = {"qwen3": QWEN3_SCRIPT, "llama3": LLAMA3_SCRIPT}
EXPECTED_TEXT = {  # the texts the scripts are written for, tokenized by each tokenizer
    "qwen3": ("First step.\n\nThen more:\n\n</think>\n\n42", "龘"),
    "llama3": ("\n\nFirst step.\n\nThen more:\n\n", ">42"),
}


def script_checkpoint(checkpoint: Path, script: dict[int, int]) -> None:
    """Rewrite the weights of `checkpoint` (untied embeddings) so that it follows `script`."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32)
    hidden = model.config.hidden_size
    states = {token: index for index, token in enumerate(script)}
    if len(states) > hidden:
        raise ValueError(f"a script of {len(states)} tokens needs hidden_size >= {len(states)}")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed, head = model.model.embed_tokens.weight, model.lm_head.weight
        embed.zero_()
        head.zero_()
        for token, successor in script.items():
            embed[token, states[token]] = 1.0  # RMSNorm turns it into sqrt(hidden) * e_state
            head[successor, states[token]] += MARGIN
    model.save_pretrained(str(checkpoint))


class TokenizerLogRecords(logging.Handler):
    """Collects what transformers' tokenizer loader logs (where the Mistral-regex warning comes from).

    transformers checks the regex only for vocabularies over 100,000 ids, so only exports on the
    real tokenizers can show that warning.
    """

    LOGGER = "transformers.tokenization_utils_base"

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> TokenizerLogRecords:
        logging.getLogger(self.LOGGER).addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        logging.getLogger(self.LOGGER).removeHandler(self)


EXPORT_SECONDS: dict[str, float] = {}  # name -> build + export time (reported at the end of the run)
EXPORT_LOGS: dict[str, list[str]] = {}  # name -> what the tokenizer loader logged during the export
