"""The character tokenizer of the random test checkpoints: Qwen-style special tokens and chat template.

No model hub is reachable, so tests and benchmarks make their own checkpoints
(`export.shapes.build_random_checkpoint`); this is the tokenizer they carry.
"""

from __future__ import annotations

# Printable ASCII (space to tilde) plus newline: enough for prompts, steps and the "\n\n" delimiter.
ALPHABET = "".join(chr(code) for code in range(32, 127)) + "\n"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"

# Qwen-like: system/user/assistant turns; the generation prompt opens the thinking block.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n<think>\\n' -}}{%- endif -%}"
)
