"""Scripted random Qwen3 and Llama 3 checkpoints on the genuine tokenizer files, exported once.

The tokenizer files come from `make tokenizers` (export.real_tokenizers, pinned and verified);
a missing npm or a changed file fails here with the same one line.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from scripted import (
    EXPECTED_TEXT,
    EXPORT_LOGS,
    EXPORT_SECONDS,
    SCRIPTS,
    TokenizerLogRecords,
    script_checkpoint,
)

from export.real_tokenizers import FetchError, build_checkpoint, fetch

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "tokenizers"


@pytest.fixture(scope="session")
def real_tokenizers() -> dict[str, Path]:
    try:
        return fetch(CACHE)
    except FetchError as exc:
        pytest.fail(str(exc), pytrace=False)


def _scripted_export(name: str, real_tokenizers: dict[str, Path], factory: pytest.TempPathFactory) -> Path:
    from tokenizers import Tokenizer

    from export.hf_export import export_checkpoint

    started = time.perf_counter()
    base = factory.mktemp(f"realtok_{name}")
    checkpoint = build_checkpoint(name, base / "checkpoint", cache_dir=CACHE)
    tokenizer = Tokenizer.from_file(str(real_tokenizers[name] / "tokenizer.json"))
    for text in EXPECTED_TEXT[name]:  # the script's ids are this tokenizer's ids for that text
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        assert all(SCRIPTS[name].get(a) == b for a, b in zip(ids, ids[1:], strict=False)), (name, ids)
    script_checkpoint(checkpoint, SCRIPTS[name])
    with TokenizerLogRecords() as records:
        export_checkpoint(checkpoint, base / "onnx")
    EXPORT_LOGS[name] = records.messages
    EXPORT_SECONDS[name] = time.perf_counter() - started
    return base / "onnx"


@pytest.fixture(scope="session")
def qwen3_dir(real_tokenizers: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exported scripted Qwen3 (real Qwen3 tokenizer, thinking markers, 151,669 logits)."""
    return _scripted_export("qwen3", real_tokenizers, tmp_path_factory)


@pytest.fixture(scope="session")
def llama3_dir(real_tokenizers: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exported scripted Llama 3 (real Llama 3 tokenizer, no thinking markers, 128,256 logits)."""
    return _scripted_export("llama3", real_tokenizers, tmp_path_factory)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Report what the real-tokenizer checkpoints cost to build and export (CI time is tight)."""
    if EXPORT_SECONDS:
        figures = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in EXPORT_SECONDS.items())
        terminalreporter.write_line(f"real-tokenizer checkpoints built and exported: {figures}")
