"""Tokenizer and prompt rendering for a model folder, without `transformers`.

`tokenizers` reads the folder's tokenizer.json; chat templates are rendered with jinja2 in the
same sandboxed environment `transformers` uses, so an edge install needs neither torch nor
transformers.

Thinking: a model whose manifest has `think_start` reasons inside a thinking block. Its prompt is
the template's generation prompt with the block opened (`think_start` + "\n", as Qwen3 and
DeepSeek-R1 write it) unless the template already left it open, so the first token the model
writes is reasoning, not the marker. Before an answer, a side whose own view is still inside
that block closes it with its own marker (`closing_for_answer`): each side renders its own view
of the one shared transcript, whatever markers the other side uses.

Byte-level tokens can split one character across tokens; `decode_complete` leaves out a trailing
character whose bytes are not all there yet instead of showing U+FFFD for it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer, decoders

from glimp_common.errors import BadInputError, ModelContractError
from onnx_lm.manifest import Manifest

ROLES = ("system", "user", "assistant")
THINK_OPEN_SUFFIX = "\n"  # what follows the start marker when the model opens thinking itself
_REPLACEMENT = "\ufffd"  # what a lossy UTF-8 decode shows for bytes that are not a whole character
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # sentencepiece byte-fallback token, e.g. <0xE2>


@dataclass(frozen=True)
class ChatMessage:
    """One message of the prompt: the unit both sides render with their own template."""

    role: str  # "system" | "user" | "assistant"
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise BadInputError(f"message role {self.role!r} is not one of {ROLES}")


def fingerprint_file(path: Path) -> str:
    """sha256 of a tokenizer.json: equal fingerprints mean equal tokenization."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class TextCodec:
    """Text <-> token ids, and messages -> prompt text, for one model folder."""

    def __init__(self, tokenizer: Tokenizer, manifest: Manifest) -> None:
        self._tokenizer = tokenizer
        self.manifest = manifest
        self._template = self._compile(manifest.chat_template) if manifest.chat_template else None
        self._byte_level = isinstance(tokenizer.decoder, decoders.ByteLevel)
        self._added_ids = set(tokenizer.get_added_tokens_decoder())

    @classmethod
    def load(cls, folder: Path, manifest: Manifest) -> TextCodec:
        path = Path(folder) / "tokenizer.json"
        if not path.is_file():
            raise ModelContractError(f"{path} is missing; re-export the model with `glimp export`")
        return cls(Tokenizer.from_file(str(path)), manifest)

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special-token strings in it map to their ids, nothing is added."""
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`, special tokens kept, so decode(encode(t)) == t for the formats we use."""
        return str(self._tokenizer.decode(list(ids), skip_special_tokens=False))

    def decode_complete(self, ids: Sequence[int]) -> str:
        """`decode(ids)` without a last character whose UTF-8 bytes are not all in `ids` yet.

        A byte-level (or byte-fallback) tokenizer may split one character over several tokens;
        decoding a prefix that ends inside it shows U+FFFD. That character is left out here until
        the token that completes it arrives. A U+FFFD for bytes that can never form a character
        (an invalid sequence followed by more text) stays: it is what the model wrote.
        """
        text = self.decode(ids)
        if text.endswith(_REPLACEMENT) and _ends_inside_character(self._tail_bytes(ids)):
            return text[: -len(_REPLACEMENT)]
        return text

    def token_text(self, token_id: int) -> str:
        return self.decode([token_id])

    def render_template(self, messages: Sequence[ChatMessage]) -> str:
        """Exactly what the template renders with a generation prompt (transformers' apply_chat_template).

        `enable_thinking=True` is passed, as the switch of templates that have one (Qwen3); a
        template without it ignores the variable. The plain prompt template fills `{question}`.
        """
        if not messages:
            raise BadInputError("the prompt has no messages; give at least one user message")
        if self._template is None:
            template = self.manifest.prompt_template or "{question}"
            return template.format(question=messages[-1].content)
        return self._render_chat(messages)

    def render_prompt(self, messages: Sequence[ChatMessage]) -> str:
        """The text the model continues: the rendered template, its thinking block opened if it has one."""
        prompt = self.render_template(messages)
        start = self.manifest.think_start
        if start is None or self.thinking_open(prompt):
            return prompt
        return prompt + start + THINK_OPEN_SUFFIX

    def thinking_open(self, text: str) -> bool:
        """True when `text` ends inside this model's thinking block (its start marker not closed after)."""
        start, end = self.manifest.think_start, self.manifest.think_end
        if start is None or end is None:
            return False
        return text.rfind(start) > text.rfind(end)

    def closing_for_answer(self, text: str) -> str:
        """What this side appends to its view `text` before writing an answer: its own closing marker
        (after the step delimiter) when `text` is still inside its thinking block, else nothing."""
        if not self.thinking_open(text):
            return ""
        delimiter = self.manifest.step_delimiter
        return ("" if text.endswith(delimiter) else delimiter) + str(self.manifest.think_end)

    def _tail_bytes(self, ids: Sequence[int]) -> bytes:
        """The raw bytes of the last tokens of `ids`, at least 3 when there are that many."""
        tail = b""
        for token_id in reversed(ids):
            piece = self._token_bytes(int(token_id))
            if piece is None:  # an added/special token: whole text, nothing split across it
                break
            tail = piece + tail
            if len(tail) >= 3:
                break
        return tail

    def _token_bytes(self, token_id: int) -> bytes | None:
        token = self._tokenizer.id_to_token(token_id)
        if token is None or token_id in self._added_ids:
            return None
        if self._byte_level:
            table = _byte_level_table()
            if all(ch in table for ch in token):
                return bytes(table[ch] for ch in token)
            return token.encode("utf-8")
        fallback = _BYTE_FALLBACK.fullmatch(token)
        return bytes([int(fallback.group(1), 16)]) if fallback else token.encode("utf-8")

    def _render_chat(self, messages: Sequence[ChatMessage]) -> str:
        special = self.manifest.special_tokens
        assert self._template is not None
        try:
            return str(
                self._template.render(
                    messages=[{"role": m.role, "content": m.content} for m in messages],
                    add_generation_prompt=True,
                    enable_thinking=True,
                    bos_token=special.get("bos_token", ""),
                    eos_token=special.get("eos_token", ""),
                    tools=None,
                )
            )
        except TemplateError as exc:
            raise ModelContractError(f"the model's chat template failed to render: {exc}") from exc

    @staticmethod
    def _compile(source: str) -> Any:
        # Mirrors transformers' chat-template environment so templates render identically.
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, **_: Any) -> str:
            return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent)

        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        return env.from_string(source)


def _ends_inside_character(data: bytes) -> bool:
    """True when `data` ends with the first bytes of a UTF-8 character whose last bytes are missing."""
    for back in range(1, min(3, len(data)) + 1):  # a cut character leaves at most 3 of its 4 bytes
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # continuation byte: look further back for the lead byte
            continue
        if byte & 0xE0 == 0xC0:
            needed = 2
        elif byte & 0xF0 == 0xE0:
            needed = 3
        elif byte & 0xF8 == 0xF0:
            needed = 4
        else:
            return False  # ASCII or an invalid lead byte: nothing pending
        return needed > back
    return False


@functools.cache
def _byte_level_table() -> dict[str, int]:
    """GPT-2's byte-level alphabet (printable stand-ins for the 256 bytes), character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    table = {chr(b): b for b in printable}
    shifted = 0
    for byte in range(256):
        if byte not in printable:
            table[chr(256 + shifted)] = byte
            shifted += 1
    return table
