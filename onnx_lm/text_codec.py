"""Tokenizer and prompt rendering for a model folder, without `transformers`.

`tokenizers` reads the folder's tokenizer.json; chat templates are rendered with jinja2 in the
same sandboxed environment `transformers` uses, so an edge install needs neither torch nor
transformers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from glimp_common.errors import BadInputError, ModelContractError
from onnx_lm.manifest import Manifest

ROLES = ("system", "user", "assistant")


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

    def token_text(self, token_id: int) -> str:
        return self.decode([token_id])

    def render_prompt(self, messages: Sequence[ChatMessage]) -> str:
        """The text the model continues: chat template with a generation prompt, or the plain template."""
        if not messages:
            raise BadInputError("the prompt has no messages; give at least one user message")
        if self._template is None:
            template = self.manifest.prompt_template or "{question}"
            return template.format(question=messages[-1].content)
        return self._render_chat(messages)

    def _render_chat(self, messages: Sequence[ChatMessage]) -> str:
        special = self.manifest.special_tokens
        assert self._template is not None
        try:
            return str(
                self._template.render(
                    messages=[{"role": m.role, "content": m.content} for m in messages],
                    add_generation_prompt=True,
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
