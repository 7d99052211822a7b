"""Bad input gets a clear error before any model work starts."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from edge_helpers import CPU, set_manifest

from edge_client import AlwaysLocal, EdgeRouter, InProcessLLM, RouterConfig, StepSettings
from edge_client.loop import MIN_ANSWER_TOKENS, MIN_STEP_TOKENS, check_prompt_fits, reasoning_room
from glimp_common.errors import BadInputError, ModelContractError
from onnx_lm import CausalLM, ChatMessage


def forward_calls(lm: CausalLM) -> list[int]:
    calls = [0]
    original = lm.forward

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    lm.forward = counted  # type: ignore[method-assign]
    return calls


@pytest.fixture()
def router(slm_dir: Path, llm: InProcessLLM) -> EdgeRouter:
    return EdgeRouter.from_folders(slm_dir, llm, RouterConfig(AlwaysLocal()), CPU)


@pytest.mark.parametrize("question", ["", "   \n\t"])
def test_empty_question(router: EdgeRouter, question: str) -> None:
    calls = forward_calls(router.slm)
    with pytest.raises(BadInputError, match="question is empty"):
        router.answer(question)
    assert calls[0] == 0


def test_question_longer_than_the_context(router: EdgeRouter) -> None:
    calls = forward_calls(router.slm)
    limit = router.slm.manifest.max_context_tokens
    with pytest.raises(BadInputError, match=rf"context holds {limit}; shorten the question"):
        router.answer("7" * limit)
    assert calls[0] == 0


def _prompt_tokens(router: EdgeRouter, question: str) -> int:
    codec = router.slm.tokenizer
    return len(codec.encode(codec.render_prompt([ChatMessage("user", question)])))


def test_a_question_that_leaves_no_room_to_reason_is_refused_before_any_model_work(
    router: EdgeRouter,
) -> None:
    limit = router.slm.manifest.max_context_tokens
    room = reasoning_room(router.slm.tokenizer, router.config)
    # One step, the end-of-thinking marker and a short answer: more than the old "one token left".
    assert room >= MIN_STEP_TOKENS + MIN_ANSWER_TOKENS + 1
    fits = max(n for n in range(1, limit) if _prompt_tokens(router, "7" * n) + room <= limit)
    calls = forward_calls(router.slm)
    with pytest.raises(BadInputError, match=rf"reasoning needs {room} more .*context holds {limit}; shorten"):
        router.answer("7" * (fits + 1))  # fits the context, leaves too little after it
    assert calls[0] == 0
    assert check_prompt_fits(router.slm.tokenizer, [ChatMessage("user", "7" * fits)], router.config) == (
        limit - room)


def test_slm_folder_made_for_the_llm_side(slm_dir: Path, tmp_path: Path) -> None:
    wrong = set_manifest(Path(shutil.copytree(slm_dir, tmp_path / "big")), role="llm")
    with pytest.raises(
        BadInputError, match=r"big holds a model made for the LLM side .*given as the small model"
    ):
        EdgeRouter.from_folders(wrong, None, RouterConfig(AlwaysLocal(), answer_by="slm"))


def test_llm_folder_made_for_the_slm_side(llm_dir: Path, tmp_path: Path) -> None:
    wrong = set_manifest(Path(shutil.copytree(llm_dir, tmp_path / "small")), role="slm")
    with pytest.raises(BadInputError, match=r"made for the SLM side .*given as the large model"):
        InProcessLLM.load(wrong)


def test_folder_without_manifest(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ModelContractError, match="manifest.json is missing"):
        EdgeRouter.from_folders(tmp_path, None, RouterConfig(AlwaysLocal(), answer_by="slm"))


def test_a_policy_that_needs_the_llm_without_one(slm_dir: Path) -> None:
    with pytest.raises(BadInputError, match="needs an LLM"):
        EdgeRouter.from_folders(slm_dir, None, RouterConfig())  # threshold + answer by the LLM
    with pytest.raises(BadInputError, match="needs an LLM"):
        EdgeRouter.from_folders(slm_dir, None, RouterConfig(AlwaysLocal()))  # the answer still needs it


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"max_step_tokens": 0}, "max_step_tokens"),
        ({"budget_tokens": 2.5}, "budget_tokens"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_step_settings_are_validated(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(BadInputError, match=match):
        StepSettings(**overrides)


def test_router_config_is_validated() -> None:
    with pytest.raises(BadInputError, match="answer_by"):
        RouterConfig(answer_by="oracle")
    with pytest.raises(BadInputError, match="delimiter"):
        RouterConfig(delimiter="")
    with pytest.raises(BadInputError, match="routing policy"):
        RouterConfig(policy="threshold")  # type: ignore[arg-type]
