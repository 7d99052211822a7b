"""The toy pair's character vocabulary: one token per character of the task, plus <eos> and <pad>.

Both models share it, so the pair has one tokenizer fingerprint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from export.char_tokenizer import build_char_tokenizer, save_hf_tokenizer
from glimp_common.errors import BadInputError
from toy.task import ALPHABET

logger = logging.getLogger(__name__)

EOS_TOKEN = "<eos>"
PAD_TOKEN = "<pad>"
SPECIAL_TOKENS = [EOS_TOKEN, PAD_TOKEN]
MODEL_MAX_LENGTH = 128  # the longest toy text is under 80 characters


def toy_tokenizer() -> Tokenizer:
    """The shared tokenizer: ids <unk>=0, <eos>=1, <pad>=2, then the task's characters."""
    return build_char_tokenizer(
        ALPHABET, special_tokens=SPECIAL_TOKENS, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN
    )


def save_toy_tokenizer(out_dir: Path) -> None:
    """Write tokenizer.json + tokenizer_config.json + special_tokens_map.json into `out_dir`.

    Under a `transformers` whose tokenizer API differs from the pinned one (a GPU machine's own
    stack, say), only tokenizer.json is written and a warning says so: training and the torch
    evaluation need no more, and the checkpoint is completed when it is re-saved under the
    pinned version (`glimp toy build` does that).
    """
    tokenizer = toy_tokenizer()
    try:
        save_hf_tokenizer(
            tokenizer, out_dir, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, model_max_length=MODEL_MAX_LENGTH
        )
    except (ImportError, TypeError, AttributeError, ValueError) as exc:
        logger.warning("transformers could not save the tokenizer (%s); wrote tokenizer.json only", exc)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        tokenizer.save(str(Path(out_dir) / "tokenizer.json"))


@dataclass(frozen=True)
class CharCodec:
    """Fast text <-> ids for the training loop, equal to the tokenizer's own encoding.

    The tokenizer maps each character to one id, so a dict lookup gives the same ids without
    a call into the tokenizer per batch row.
    """

    char_to_id: dict[str, int]
    eos_id: int
    pad_id: int

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer) -> CharCodec:
        vocab = tokenizer.get_vocab()
        chars = {token: index for token, index in vocab.items() if len(token) == 1}
        return cls(chars, vocab[EOS_TOKEN], vocab[PAD_TOKEN])

    @property
    def vocab_size(self) -> int:
        return len(self.char_to_id) + len(SPECIAL_TOKENS) + 1  # + <unk>

    def encode(self, text: str) -> list[int]:
        try:
            return [self.char_to_id[ch] for ch in text]
        except KeyError as exc:
            raise BadInputError(
                f"character {exc.args[0]!r} is not in the toy vocabulary {ALPHABET!r}"
            ) from exc

    def decode(self, ids: list[int]) -> str:
        """Characters of the ids; stops at the first <eos>; other special ids are dropped."""
        id_to_char = {index: ch for ch, index in self.char_to_id.items()}
        out = []
        for index in ids:
            if index == self.eos_id:
                break
            out.append(id_to_char.get(index, ""))
        return "".join(out)
