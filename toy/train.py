"""Train one toy model: AdamW, warm-up + cosine schedule, loss on the solution only.

Every optimizer step sees fresh problems (`task.train_batch(seed, step)`), so a run is a pure
function of its settings: given the seed it is deterministic on a CPU, and a resumed run sees
exactly the batches the uninterrupted one would have.

The output folder is a normal Hugging Face checkpoint (config.json, model.safetensors,
tokenizer) plus `train_state.pt` (weights, optimizer, schedule, loss history) for resuming.
Ctrl-C finishes the step in flight, writes the checkpoint and then stops.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glimp_common.errors import BadInputError
from toy.model import ModelSpec, build_model, parameter_count
from toy.task import Problem, TaskConfig, check_int, prompt_text, solution_text, train_batch
from toy.vocab import CharCodec, save_toy_tokenizer, toy_tokenizer

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
IGNORE_INDEX = -100  # label of positions that carry no loss (prompt and padding)


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained."""

    steps: int  # optimizer steps; each sees batch_size fresh problems
    batch_size: int = 48
    lr: float = 3e-3  # peak learning rate, reached after warmup_steps
    warmup_steps: int = 100  # linear warm-up, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # max global gradient norm
    seed: int = 0  # seeds the initial weights and the batch stream
    save_every: int = 500  # steps between checkpoints (a checkpoint is also written at the end)
    log_every: int = 50  # steps between loss records in the history
    device: str = "cpu"  # "cpu" or "cuda"
    threads: int = 1  # CPU threads for torch (one per model trains two models side by side well)

    def __post_init__(self) -> None:
        check_int("steps", self.steps, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("warmup_steps", self.warmup_steps, minimum=0)
        check_int("seed", self.seed)
        check_int("save_every", self.save_every, minimum=1)
        check_int("log_every", self.log_every, minimum=1)
        check_int("threads", self.threads, minimum=1)
        for name in ("lr", "min_lr_ratio", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise BadInputError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.lr == 0 or self.min_lr_ratio > 1:
            raise BadInputError(f"lr must be > 0 and min_lr_ratio <= 1, got {self.lr}, {self.min_lr_ratio}")
        if self.device not in ("cpu", "cuda") and not self.device.startswith("cuda:"):
            raise BadInputError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")

    def schedule_key(self) -> dict[str, Any]:
        """Settings a resumed run must share with the run it continues (all but bookkeeping)."""
        data = asdict(self)
        for name in ("save_every", "log_every", "device", "threads"):
            data.pop(name)
        return data


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or interrupted) run did."""

    out_dir: Path
    steps_done: int
    parameters: int
    seconds: float  # wall time of this invocation (a resumed run counts only its own part)
    total_seconds: float  # wall time summed over every invocation that trained this checkpoint
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss since last record)


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based)."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine


def encode_batch(
    problems: list[Problem], codec: CharCodec
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, labels), each [batch, longest], right-padded.

    Labels keep the solution and its EOS only: the model is never trained to predict the
    question, which it is always given.
    """
    import torch

    rows, label_rows = [], []
    for problem in problems:
        prompt = codec.encode(prompt_text(problem.question))
        solution = [*codec.encode(solution_text(problem)), codec.eos_id]
        rows.append(prompt + solution)
        label_rows.append([IGNORE_INDEX] * len(prompt) + solution)
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), codec.pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, label_row) in enumerate(zip(rows, label_rows, strict=True)):
        ids[i, : len(row)] = torch.tensor(row)
        labels[i, : len(row)] = torch.tensor(label_row)
        mask[i, : len(row)] = 1
    return ids, mask, labels


def solution_loss(model: Any, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled (solution) positions."""
    import torch.nn.functional as F

    logits = model(input_ids=ids, attention_mask=mask).logits
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
    )


class _InterruptFlag:
    """Turns the first Ctrl-C into a request to stop at the next step boundary.

    Stopping between steps (never inside `optimizer.step`) is what keeps the saved weights and
    optimizer state consistent. A second Ctrl-C interrupts at once, as usual.
    """

    def __init__(self) -> None:
        self.requested = False

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        logger.warning("interrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort)")

    @contextlib.contextmanager
    def installed(self) -> Iterator[_InterruptFlag]:
        # Signal handlers can only be set from the main thread; elsewhere Ctrl-C cannot reach us.
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


@dataclass
class _Run:
    """Mutable state of a run in progress."""

    model: Any
    optimizer: Any
    scheduler: Any
    step: int  # optimizer steps completed
    losses: list[tuple[int, float]]
    seconds_before: float  # training time of earlier invocations
    trained_on: list[dict[str, Any]] = field(default_factory=list)  # earlier invocations' stacks


def _setup(spec: ModelSpec, config: TrainConfig, task: TaskConfig, codec: CharCodec) -> _Run:
    import torch

    torch.manual_seed(config.seed)
    model: Any = build_model(spec, codec)
    model.to(config.device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]  # norms: no weight decay
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.95),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))
    return _Run(model, optimizer, scheduler, 0, [], 0.0)


def _state_meta(spec: ModelSpec, config: TrainConfig, task: TaskConfig) -> dict[str, Any]:
    return {"model_spec": spec.to_dict(), "train": config.schedule_key(), "task": asdict(task)}


def _restore(run: _Run, state: dict[str, Any], meta: dict[str, Any], out_dir: Path) -> None:
    for key, value in meta.items():
        if state["meta"].get(key) != value:
            raise BadInputError(
                f"{out_dir / STATE_FILE} was trained with other {key} settings "
                f"({state['meta'].get(key)} != {value}); resume with the same settings or use a new --out"
            )
    run.model.load_state_dict(state["model"])
    if "optimizer" in state:  # a finished run keeps none: there is nothing left to resume
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
    elif state["step"] < state["meta"]["train"]["steps"]:
        raise BadInputError(f"{out_dir / STATE_FILE} has no optimizer state; start over with --no-resume")
    run.step, run.losses, run.seconds_before = state["step"], list(state["losses"]), state["seconds"]
    run.trained_on = list(state.get("trained_on", []))


def save_checkpoint(
    run: _Run, out_dir: Path, meta: dict[str, Any], seconds: float, trained_on: list[dict[str, Any]]
) -> None:
    """Write the Hugging Face folder, then the resume state (atomically, last).

    A finished run drops the optimizer state (two thirds of the file): nothing is left to resume.
    `trained_on` records which device and library versions trained which steps (provenance).
    """
    import torch

    run.model.save_pretrained(str(out_dir))
    save_toy_tokenizer(out_dir)
    state = {
        "meta": meta,
        "model": run.model.state_dict(),
        "step": run.step,
        "losses": run.losses,
        "seconds": seconds,
        "trained_on": trained_on,
    }
    if run.step < meta["train"]["steps"]:
        state["optimizer"] = run.optimizer.state_dict()
        state["scheduler"] = run.scheduler.state_dict()
    tmp = out_dir / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, out_dir / STATE_FILE)
    logger.info("checkpoint at step %d written to %s", run.step, out_dir)


def _stack(config: TrainConfig, first_step: int, last_step: int) -> dict[str, Any]:
    """Where steps first_step..last_step were trained: device and library versions."""
    import torch
    import transformers

    device = config.device
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return {
        "steps": [first_step, last_step],
        "device": device,
        "threads": config.threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def _deterministic_cuda() -> None:
    """Ask CUDA for deterministic kernels (cuBLAS needs its workspace pinned before first use).

    warn_only: an op without a deterministic kernel warns instead of stopping the run; whether
    GPU runs come out bit-identical is measured, not assumed (see models/toy-pair/README.md).
    """
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


StepCallback = Callable[[int, float], None]  # (steps completed, loss of that step)


def train(
    spec: ModelSpec,
    config: TrainConfig,
    out_dir: Path,
    *,
    task: TaskConfig | None = None,
    resume: bool = True,
    progress: bool = True,
    callback: StepCallback | None = None,
    desc: str = "train",
    bar_position: int = 0,
) -> TrainResult:
    """Train (or resume) one model into `out_dir`; return what was done.

    `callback(step, loss)` runs after every completed step; a KeyboardInterrupt raised from it
    (or a Ctrl-C) writes a checkpoint at that step and is then re-raised.
    Raises BadInputError when `out_dir` holds a run with other settings.
    """
    import torch

    task = task or TaskConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    if config.device.startswith("cuda"):
        _deterministic_cuda()
    codec = CharCodec.from_tokenizer(toy_tokenizer())
    meta = _state_meta(spec, config, task)
    run = _setup(spec, config, task, codec)
    state_path = out_dir / STATE_FILE
    if resume and state_path.is_file():
        _restore(run, torch.load(state_path, map_location=config.device, weights_only=False), meta, out_dir)
        logger.info("resuming %s from step %d", out_dir, run.step)
    started, first_step = time.monotonic(), run.step

    def save() -> None:
        trained_on = run.trained_on + (
            [_stack(config, first_step, run.step)] if run.step > first_step else []
        )
        save_checkpoint(run, out_dir, meta, run.seconds_before + time.monotonic() - started, trained_on)

    try:
        with _InterruptFlag().installed() as flag:
            _loop(run, config, task, codec, flag, save, callback, progress, (desc, bar_position))
    except KeyboardInterrupt:
        save()
        logger.warning("interrupted at step %d; resume with the same command", run.step)
        raise
    seconds = time.monotonic() - started
    # Written even when nothing was left to train: the folder then matches this transformers
    # version (a checkpoint trained elsewhere, under another version, is re-saved here).
    save()
    return TrainResult(
        out_dir, run.step, parameter_count(run.model), seconds, run.seconds_before + seconds, run.losses
    )


def _optimizer_step(run: _Run, config: TrainConfig, task: TaskConfig, codec: CharCodec) -> float:
    """One AdamW step on the fresh batch of step `run.step`; return its loss."""
    import torch

    batch = train_batch(config.seed, run.step, config.batch_size, task)
    ids, mask, labels = (t.to(config.device) for t in encode_batch(batch, codec))
    loss = solution_loss(run.model, ids, mask, labels)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    run.step += 1
    return float(loss.item())


def _loop(
    run: _Run,
    config: TrainConfig,
    task: TaskConfig,
    codec: CharCodec,
    flag: _InterruptFlag,
    save: Callable[[], None],
    callback: StepCallback | None,
    progress: bool,
    bar_label: tuple[str, int],
) -> None:
    from tqdm import tqdm

    run.model.train()
    desc, position = bar_label
    window: list[float] = []
    with tqdm(
        total=config.steps,
        initial=run.step,
        desc=desc,
        position=position,
        disable=not progress,
        mininterval=2.0,
    ) as bar:
        while run.step < config.steps:
            window.append(step_loss := _optimizer_step(run, config, task, codec))
            if run.step % config.log_every == 0 or run.step == config.steps:
                run.losses.append((run.step, sum(window) / len(window)))
                bar.set_postfix(loss=f"{run.losses[-1][1]:.4f}")
                window.clear()
            bar.update(1)
            if callback is not None:
                callback(run.step, step_loss)
            if flag.requested:
                raise KeyboardInterrupt
            if run.step % config.save_every == 0 and run.step < config.steps:
                save()
