"""Character-level Hugging Face tokenizers for the project's own models.

No model hub is reachable, so the tiny test models and the toy reasoning pair get tokenizers
built here: one token per character plus whole special tokens. The result is a normal
`tokenizer.json` + `tokenizer_config.json` folder that `transformers` and `tokenizers` load.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

UNK_TOKEN = "<unk>"


def build_char_tokenizer(
    alphabet: str,
    *,
    special_tokens: list[str],
    eos_token: str,
    pad_token: str | None = None,
    bos_token: str | None = None,
) -> Tokenizer:
    """A tokenizer with ids 0..len(special_tokens)-1 for specials, then one id per character.

    Special tokens are matched whole before the text is split into characters.
    """
    if len(set(alphabet)) != len(alphabet):
        raise ValueError("alphabet has repeated characters")
    specials = list(dict.fromkeys([UNK_TOKEN, *special_tokens]))
    for token in (eos_token, pad_token, bos_token):
        if token is not None and token not in specials:
            raise ValueError(f"{token!r} must be listed in special_tokens")
    vocab = {token: i for i, token in enumerate(specials)}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    # Every character is its own pre-token ([\s\S] matches newlines too, unlike ".").
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(specials)
    return tokenizer


def save_hf_tokenizer(
    tokenizer: Tokenizer,
    out_dir: Path,
    *,
    eos_token: str,
    pad_token: str | None = None,
    bos_token: str | None = None,
    chat_template: str | None = None,
    model_max_length: int = 4096,
) -> None:
    """Write the tokenizer as a Hugging Face folder (needs `transformers`, i.e. the export extra)."""
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token=UNK_TOKEN,
        eos_token=eos_token,
        pad_token=pad_token,
        bos_token=bos_token,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))
