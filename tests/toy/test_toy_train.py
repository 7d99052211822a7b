"""The trainer on CPU: loss falls, runs are deterministic, Ctrl-C leaves a resumable checkpoint."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from glimp_common.errors import BadInputError
from toy.model import PRESETS, ModelSpec, build_model, parameter_count
from toy.train import STATE_FILE, TrainConfig, lr_factor, train
from toy.vocab import CharCodec, toy_tokenizer

TINY = ModelSpec(hidden=32, layers=2, heads=2, ff=64)


def _config(steps: int, **kwargs: object) -> TrainConfig:
    defaults: dict[str, object] = {"batch_size": 16, "lr": 1e-2, "warmup_steps": 5, "log_every": 5, "seed": 0}
    return TrainConfig(steps=steps, **{**defaults, **kwargs})  # type: ignore[arg-type]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(str(folder)).state_dict()


def test_loss_falls_in_a_short_run(tmp_path: Path) -> None:
    result = train(TINY, _config(40), tmp_path / "run", progress=False)
    first, last = result.losses[0][1], result.losses[-1][1]
    assert result.steps_done == 40
    assert last < 0.9 * first, result.losses  # ~3.0 -> ~2.45 nats in 40 steps
    # The folder is a Hugging Face checkpoint with the toy tokenizer.
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", STATE_FILE):
        assert (tmp_path / "run" / name).is_file()


def test_reference_sizes() -> None:
    codec = CharCodec.from_tokenizer(toy_tokenizer())
    slm, llm = (parameter_count(build_model(PRESETS[r], codec)) for r in ("slm", "llm"))
    assert 50_000 < slm < 70_000
    assert 1.1e6 < llm < 1.3e6


def test_interrupted_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    straight = train(TINY, _config(12), tmp_path / "straight", progress=False)

    def interrupt(step: int, loss: float) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TINY, _config(12), tmp_path / "resumed", progress=False, callback=interrupt)
    saved = torch.load(tmp_path / "resumed" / STATE_FILE, weights_only=False)
    assert saved["step"] == 5 and "optimizer" in saved
    _weights(tmp_path / "resumed")  # what Ctrl-C left is a loadable checkpoint

    resumed = train(TINY, _config(12), tmp_path / "resumed", progress=False)
    assert resumed.steps_done == 12
    assert resumed.losses == straight.losses
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert "optimizer" not in torch.load(tmp_path / "resumed" / STATE_FILE, weights_only=False)


@pytest.fixture()
def interactive_sigint() -> Iterator[None]:
    """SIGINT handled as in a terminal, whatever the suite inherited.

    Under `nohup make test &` the shell starts the suite with SIGINT ignored, and Python then
    leaves it ignored: the test sets Python's usual handler itself and puts back what it found.
    """
    found = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, found)


@pytest.mark.usefixtures("interactive_sigint")
def test_ctrl_c_stops_at_a_step_boundary_and_saves(tmp_path: Path) -> None:
    def press_ctrl_c(step: int, loss: float) -> None:
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the real signal, handled by the trainer

    with pytest.raises(KeyboardInterrupt):
        train(TINY, _config(10), tmp_path / "run", progress=False, callback=press_ctrl_c)
    assert torch.load(tmp_path / "run" / STATE_FILE, weights_only=False)["step"] == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the trainer put it back


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    train(TINY, _config(3), tmp_path / "run", progress=False)
    with pytest.raises(BadInputError, match="other train settings"):
        train(TINY, _config(3, lr=1e-3), tmp_path / "run", progress=False)
    with pytest.raises(BadInputError, match="other model_spec settings"):
        train(ModelSpec(hidden=32, layers=1, heads=2, ff=64), _config(3), tmp_path / "run", progress=False)
    fresh = train(TINY, _config(3, lr=1e-3), tmp_path / "run", progress=False, resume=False)
    assert fresh.steps_done == 3


def test_learning_rate_schedule() -> None:
    config = _config(100, warmup_steps=10)
    assert lr_factor(0, config) == pytest.approx(0.1)
    assert lr_factor(9, config) == pytest.approx(1.0)
    assert lr_factor(10, config) == pytest.approx(1.0)
    assert lr_factor(99, config) == pytest.approx(0.1, abs=1e-3)
    factors = [lr_factor(s, config) for s in range(10, 100)]
    assert factors == sorted(factors, reverse=True)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ModelSpec(hidden=-64, layers=4, heads=4, ff=176), "hidden must be >= 1"),
        (lambda: ModelSpec(hidden=64, layers=0, heads=4, ff=176), "layers must be >= 1"),
        (lambda: ModelSpec(hidden=60, layers=4, heads=8, ff=176), "multiple of heads"),
        (lambda: TrainConfig(steps=0), "steps must be >= 1"),
        (lambda: TrainConfig(steps=10, batch_size=-1), "batch_size must be >= 1"),
        (lambda: TrainConfig(steps=10, seed=0.5), "seed must be an integer"),
        (lambda: TrainConfig(steps=10, lr=float("nan")), "lr must be a finite number"),
        (lambda: TrainConfig(steps=10, device="tpu"), "device must be"),
    ],
)
def test_impossible_training_settings_are_rejected(make: object, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        make()  # type: ignore[operator]
