"""Calibration: tau from a target share of cloud steps, on made-up entropies and on a real SLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_client import (
    AlwaysLocal,
    Calibration,
    EdgeRouter,
    RouterConfig,
    StepSettings,
    TargetShare,
    calibrate,
)
from edge_client.calibrate import read_questions, tau_for_share
from edge_client.policies import Probe, Route
from glimp_common.errors import BadInputError
from onnx_lm import CausalLM

QUESTIONS = ["What is 12+30?", "Name three colours.", "Why is the sky blue?", "2*7-3=?"]


@pytest.mark.parametrize(("share", "expected"), [(0.0, None), (0.2, 0.8), (0.5, 0.5), (1.0, 0.0)])
def test_tau_is_the_one_minus_share_quantile(share: float, expected: float | None) -> None:
    entropies = [0.1 * i for i in range(10)]  # 0.0 .. 0.9
    tau = tau_for_share(entropies, share)
    cloud = sum(h >= tau for h in entropies)
    assert cloud == round(share * len(entropies))
    if expected is not None:
        assert tau == pytest.approx(expected)


def test_tau_for_share_refuses_a_share_outside_unit_interval() -> None:
    with pytest.raises(BadInputError, match=r"\[0, 1\]"):
        tau_for_share([0.1, 0.2], 1.5)


def test_calibrating_a_real_slm_hits_the_share_on_its_own_steps(slm: CausalLM, tmp_path: Path) -> None:
    router = EdgeRouter(
        slm,
        None,
        RouterConfig(
            AlwaysLocal(), StepSettings(max_step_tokens=6, budget_tokens=30, seed=0), answer_by="none"
        ),
    )
    result = calibrate(router, QUESTIONS, 0.3)
    assert result.steps == len(result.entropies_nats) >= len(QUESTIONS) and result.questions == len(QUESTIONS)
    assert sum(h >= result.tau for h in result.entropies_nats) == round(0.3 * result.steps)
    path = result.save(tmp_path / "calibration.json")
    loaded = Calibration.load(path)
    assert loaded == result
    assert set(json.loads(path.read_text())) >= {"tau", "target_share", "steps", "slm_fingerprint"}
    policy = TargetShare.from_calibration(loaded, 0.3)
    routed = [policy.before_step(Probe(0, h, 0)).route for h in loaded.entropies_nats]
    assert routed.count(Route.CLOUD) == round(0.3 * loaded.steps)


def test_calibration_files_are_checked(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="does not exist; run `glimp calibrate` first"):
        Calibration.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"tau": 1.0}')
    with pytest.raises(BadInputError, match="is not a calibration file"):
        Calibration.load(bad)


def test_question_files(tmp_path: Path) -> None:
    good = tmp_path / "q.jsonl"
    good.write_text('{"id": "1", "question": "a?"}\n\n{"id": "2", "question": "b?", "answer": 3}\n')
    assert read_questions(good) == ["a?", "b?"] and read_questions(good, limit=1) == ["a?"]
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "1"}\n')
    with pytest.raises(BadInputError, match=r"broken.jsonl:1 .*\"question\""):
        read_questions(broken)
