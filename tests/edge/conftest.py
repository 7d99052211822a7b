"""Fixtures of the edge tests: the tiny SLM/LLM pair, loaded once, and models forced to one token."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from edge_helpers import CPU, force_token

from edge_client import InProcessLLM
from onnx_lm import CausalLM


@pytest.fixture(scope="session")
def slm_dir(tiny_qwen3_dir: Path) -> Path:
    return tiny_qwen3_dir


@pytest.fixture(scope="session")
def llm_dir(tiny_llama_dir: Path) -> Path:
    return tiny_llama_dir


@pytest.fixture(scope="session")
def slm(slm_dir: Path) -> CausalLM:
    return CausalLM.load(slm_dir, CPU)


@pytest.fixture(scope="session")
def llm(llm_dir: Path) -> InProcessLLM:
    return InProcessLLM.load(llm_dir, CPU)


@pytest.fixture(scope="session")
def forced(
    tmp_path_factory: pytest.TempPathFactory, slm_dir: Path, llm_dir: Path
) -> Callable[[str, str], Path]:
    """forced(side, token) -> a folder of the SLM ("slm") or LLM ("llm") forced to `token`, cached."""
    made: dict[tuple[str, str], Path] = {}

    def make(side: str, token: str) -> Path:
        if (side, token) not in made:
            base = tmp_path_factory.mktemp(f"forced_{side}")
            made[side, token] = force_token(slm_dir if side == "slm" else llm_dir, base / "model", token)
        return made[side, token]

    return make
