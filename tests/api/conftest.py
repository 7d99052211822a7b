"""Fixtures of the API tests: the shipped toy pair, loaded once, served per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_helpers import Served, load_pair, serve

from edge_client import InProcessLLM
from onnx_lm import CausalLM


@pytest.fixture(scope="session")
def pair() -> tuple[CausalLM, InProcessLLM]:
    return load_pair()


@pytest.fixture(scope="module")
def served(pair: tuple[CausalLM, InProcessLLM]) -> Iterator[Served]:
    with serve(*pair) as running:
        yield running
