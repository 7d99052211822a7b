"""`glimp toy build`: the whole toy pair, end to end, as the stages data -> train -> export -> eval.

Layout of the output folder (what ships in `models/toy-pair/`)::

    data/dev.jsonl data/test.jsonl   held-out problems (the benchmark uses test)
    slm-hf/ llm-hf/                  Hugging Face checkpoints (no optimizer state)
    slm/ llm/                        exported ONNX model folders with manifests
    figures.json                     accuracy, entropy AUROC, parameters, training time
    SHA256SUMS                       checksums of everything above

Training state (weights + optimizer, for resuming) lives in a separate work folder so it never
ships. Each stage reuses what is already there: a finished training run is not repeated.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import multiprocessing
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glimp_common.errors import BadInputError
from toy.model import PRESETS, ModelSpec
from toy.task import (
    ANSWER_PREFIX,
    PROMPT_TEMPLATE,
    STEP_DELIMITER,
    TaskConfig,
    check_int,
    problems,
    take,
    write_jsonl,
)
from toy.train import STATE_FILE, TrainConfig, TrainResult, train

logger = logging.getLogger(__name__)

STAGES = ("data", "train", "export", "eval")
ROLES = ("slm", "llm")
SUMS_FILE = "SHA256SUMS"
FIGURES_FILE = "figures.json"
# Files of a trained folder that make the Hugging Face checkpoint (train_state.pt stays behind).
HF_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


@dataclass(frozen=True)
class PairConfig:
    """Everything `build` needs; the defaults reproduce the shipped pair."""

    out_dir: Path
    work_dir: Path  # training checkpoints with resume state
    seed: int = 0  # seeds the held-out sets and both training runs
    task: TaskConfig = field(default_factory=TaskConfig)
    dev_problems: int = 400
    test_problems: int = 400
    specs: dict[str, ModelSpec] = field(default_factory=lambda: dict(PRESETS))
    training: dict[str, TrainConfig] = field(default_factory=dict)  # role -> how it is trained
    until: str = "eval"  # last stage to run
    parallel: bool = True  # train both models at once, in two processes
    progress: bool = True

    def __post_init__(self) -> None:
        if self.until not in STAGES:
            raise BadInputError(f"until must be one of {', '.join(STAGES)}, got {self.until!r}")
        missing = [role for role in ROLES if role not in self.training or role not in self.specs]
        if missing:
            raise BadInputError(f"no model shape or training settings for {', '.join(missing)}")

    def runs(self, stage: str) -> bool:
        return STAGES.index(stage) <= STAGES.index(self.until)


def write_data(
    out_dir: Path, seed: int, dev: int, test: int, task: TaskConfig | None = None
) -> dict[str, Path]:
    """Write the held-out dev and test sets to `<out_dir>/data/`; return their paths."""
    paths = {}
    for split, count in (("dev", dev), ("test", test)):
        check_int(f"number of {split} problems", count, minimum=1)
        paths[split] = Path(out_dir) / "data" / f"{split}.jsonl"
        write_jsonl(take(problems(split, seed, task), count), paths[split])
        logger.info("wrote %d %s problems to %s", count, split, paths[split])
    return paths


def _train_job(
    role: str, spec: ModelSpec, config: TrainConfig, task: TaskConfig, work_dir: Path, progress: bool
) -> TrainResult:
    """One training run; top-level so a worker process can run it."""
    logging.basicConfig(level=logging.WARNING)
    position = ROLES.index(role)
    return train(
        spec, config, work_dir / role, task=task, progress=progress, desc=role, bar_position=position
    )


def train_pair(config: PairConfig) -> dict[str, TrainResult]:
    """Train (or resume, or find finished) both models, side by side when `config.parallel`."""
    jobs = {
        role: (role, config.specs[role], config.training[role], config.task, config.work_dir, config.progress)
        for role in ROLES
    }
    if not config.parallel:
        return {role: _train_job(*job) for role, job in jobs.items()}
    # spawn: a forked child would inherit torch's thread pools and CUDA state from this process.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=len(jobs), mp_context=context) as pool:
        futures = {role: pool.submit(_train_job, *job) for role, job in jobs.items()}
        return {role: future.result() for role, future in futures.items()}


def ship_checkpoint(trained_dir: Path, out_dir: Path) -> Path:
    """Copy the Hugging Face files of a trained folder (not its resume state) to `out_dir`."""
    missing = [name for name in HF_FILES if not (trained_dir / name).is_file()]
    if missing:
        raise BadInputError(f"{trained_dir} lacks {', '.join(missing)}; train it first (`glimp toy train`)")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in HF_FILES:
        shutil.copyfile(trained_dir / name, out_dir / name)
    return out_dir


def export_pair(out_dir: Path) -> None:
    """Export `<out>/slm-hf` and `<out>/llm-hf` to the ONNX folders `<out>/slm` and `<out>/llm`."""
    from export.hf_export import ExportOptions, export_checkpoint

    for role in ROLES:
        options = ExportOptions(
            step_delimiter=STEP_DELIMITER,
            think_end=ANSWER_PREFIX,
            prompt_template=PROMPT_TEMPLATE,
            role=role,
            force=True,
        )
        manifest = export_checkpoint(out_dir / f"{role}-hf", out_dir / role, options)
        logger.info("exported %s: %s", role, manifest.parity)


def evaluate_pair(out_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Acceptance figures of the exported pair on the test set, with training provenance."""
    import torch

    from toy.evaluate import evaluate
    from toy.task import read_jsonl

    test = read_jsonl(out_dir / "data" / "test.jsonl")
    figures: dict[str, Any] = {"test_problems": len(test)}
    for role in ROLES:
        result = evaluate(out_dir / role, test).to_dict()
        state = work_dir / role / STATE_FILE
        if state.is_file():
            saved = torch.load(state, map_location="cpu", weights_only=False)
            result["training"] = {
                **saved["meta"],
                "steps_done": saved["step"],
                "seconds": round(saved["seconds"], 1),
                "trained_on": saved.get("trained_on", []),
            }
        figures[role] = result
        logger.info("%s: %s", role, result)
    figures["gap_points"] = round(100 * (figures["llm"]["accuracy"] - figures["slm"]["accuracy"]), 2)
    (out_dir / FIGURES_FILE).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return figures


def write_checksums(out_dir: Path) -> Path:
    """SHA256SUMS over every shipped file (sha256sum -c format), README and itself excluded."""
    lines = []
    for path in sorted(p for p in out_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(out_dir).as_posix()
        if relative in (SUMS_FILE, "README.md"):
            continue
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {relative}\n")
    target = out_dir / SUMS_FILE
    target.write_text("".join(lines), encoding="utf-8")
    return target


def build_pair(config: PairConfig) -> dict[str, Any]:
    """Run the stages up to `config.until`; return the figures (empty before the eval stage)."""
    write_data(config.out_dir, config.seed, config.dev_problems, config.test_problems, config.task)
    if not config.runs("train"):
        return {}
    results = train_pair(config)
    for role, result in results.items():
        logger.info(
            "%s: %d steps, %d parameters, %.0f s",
            role,
            result.steps_done,
            result.parameters,
            result.total_seconds,
        )
        ship_checkpoint(config.work_dir / role, config.out_dir / f"{role}-hf")
    if config.runs("export"):
        export_pair(config.out_dir)
    figures = evaluate_pair(config.out_dir, config.work_dir) if config.runs("eval") else {}
    write_checksums(config.out_dir)
    return figures
