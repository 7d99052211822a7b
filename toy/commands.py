"""`glimp toy <data|train|export|eval|build>`: make, train, export and evaluate the toy pair.

Every flag has an environment twin (GLIMP_TOY_*). `glimp toy build` runs everything; the other
subcommands run one stage each.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glimp_common.env import env_flag, env_str
from glimp_common.errors import BadInputError

if TYPE_CHECKING:
    from toy.model import ModelSpec
    from toy.task import TaskConfig
    from toy.train import TrainConfig

DEFAULT_OUT = "models/toy-pair"
DEFAULT_WORK = "build/toy-pair"
# Training defaults per role: the settings of the shipped pair.
DEFAULT_STEPS = {"slm": 5000, "llm": 4000}
DEFAULT_LR = {"slm": 3e-3, "llm": 2e-3}


def _env(name: str, default: object) -> str | None:
    return env_str(f"GLIMP_TOY_{name}", None if default is None else str(default))


def _int(text: str) -> int:
    """argparse type for integers that names the offending value ("1.5" is not a seed)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=_int, default=_env("SEED", 0), help="seed (env GLIMP_TOY_SEED)")


def _add_data(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--out", default=_env("OUT", DEFAULT_OUT), help="folder for data/ (env GLIMP_TOY_OUT)")
    sub.add_argument("--dev", type=_int, default=_env("DEV", 400), help="dev problems (env GLIMP_TOY_DEV)")
    sub.add_argument(
        "--test", type=_int, default=_env("TEST", 400), help="test problems (env GLIMP_TOY_TEST)"
    )
    sub.add_argument("--min-ops", type=_int, default=_env("MIN_OPS", 2), help="(env GLIMP_TOY_MIN_OPS)")
    sub.add_argument("--max-ops", type=_int, default=_env("MAX_OPS", 5), help="(env GLIMP_TOY_MAX_OPS)")
    _add_common(sub)


def _add_training(sub: argparse.ArgumentParser, prefix: str, env_prefix: str) -> None:
    """Training flags; `prefix` is "" for `train`, "slm-"/"llm-" for `build`."""
    for flag, kind, help_ in (
        ("steps", _int, "optimizer steps"),
        ("lr", float, "peak learning rate"),
        ("hidden", _int, "model width"),
        ("layers", _int, "decoder layers"),
        ("heads", _int, "attention heads"),
        ("ff", _int, "feed-forward width"),
    ):
        env = f"{env_prefix}{flag.upper()}"
        sub.add_argument(
            f"--{prefix}{flag}", type=kind, default=_env(env, None), help=f"{help_} (env GLIMP_TOY_{env})"
        )


def _add_run_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--batch-size", type=_int, default=_env("BATCH_SIZE", 48), help="(env GLIMP_TOY_BATCH_SIZE)"
    )
    sub.add_argument("--device", default=_env("DEVICE", "cpu"), help="cpu or cuda (env GLIMP_TOY_DEVICE)")
    sub.add_argument(
        "--threads",
        type=_int,
        default=_env("THREADS", 1),
        help="CPU threads per model (env GLIMP_TOY_THREADS)",
    )
    sub.add_argument(
        "--no-progress",
        action="store_true",
        default=env_flag("GLIMP_TOY_NO_PROGRESS"),
        help="(env GLIMP_TOY_NO_PROGRESS=1)",
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    subs = parser.add_subparsers(dest="toy_command", required=True, metavar="{data,train,export,eval,build}")
    _add_data(subs.add_parser("data", help="write the held-out dev/test problems as JSONL"))

    train = subs.add_parser("train", help="train one model (resumes when --out holds a run)")
    train.add_argument(
        "--size", choices=("slm", "llm"), default=_env("SIZE", "slm"), help="preset (env GLIMP_TOY_SIZE)"
    )
    train.add_argument(
        "--out", default=_env("TRAIN_OUT", None), help="checkpoint folder (default build/toy-pair/<size>)"
    )
    train.add_argument("--no-resume", action="store_true", help="start over even if --out holds a run")
    _add_training(train, "", "")
    _add_run_flags(train)
    _add_common(train)

    export = subs.add_parser("export", help="export a trained checkpoint to an ONNX model folder")
    export.add_argument("--checkpoint", required=True, type=Path, help="Hugging Face folder from `train`")
    export.add_argument("--out", required=True, type=Path, help="ONNX model folder to write (replaced)")
    export.add_argument("--role", choices=("slm", "llm"), required=True, help="which side it is made for")

    ev = subs.add_parser("eval", help="greedy accuracy and entropy AUROC of one model on a JSONL set")
    ev.add_argument("--model", required=True, type=Path, help="ONNX model folder or Hugging Face checkpoint")
    ev.add_argument(
        "--data",
        default=_env("DATA", f"{DEFAULT_OUT}/data/test.jsonl"),
        type=Path,
        help="(env GLIMP_TOY_DATA)",
    )
    ev.add_argument("--limit", type=_int, default=None, help="only the first N problems")
    ev.add_argument("--device", default=_env("DEVICE", "cpu"), help="torch device for checkpoints")

    build = subs.add_parser("build", help="data, training, export and evaluation of the whole pair")
    _add_data(build)
    build.add_argument(
        "--work", default=_env("WORK", DEFAULT_WORK), help="training state (env GLIMP_TOY_WORK)"
    )
    build.add_argument("--until", choices=("data", "train", "export", "eval"), default=_env("UNTIL", "eval"))
    build.add_argument("--sequential", action="store_true", help="train one model after the other")
    _add_training(build, "slm-", "SLM_")
    _add_training(build, "llm-", "LLM_")
    for role in ("slm", "llm"):
        env = f"{role.upper()}_DEVICE"
        build.add_argument(
            f"--{role}-device",
            default=_env(env, None),
            help=f"device for the {role} only (env GLIMP_TOY_{env})",
        )
    _add_run_flags(build)


def run(args: argparse.Namespace) -> int:
    handler = {
        "data": _run_data,
        "train": _run_train,
        "export": _run_export,
        "eval": _run_eval,
        "build": _run_build,
    }
    return handler[args.toy_command](args)


def _task_config(args: argparse.Namespace) -> TaskConfig:
    from toy.task import TaskConfig

    return TaskConfig(min_ops=int(args.min_ops), max_ops=int(args.max_ops))


def _run_data(args: argparse.Namespace) -> int:
    from toy.build import write_data

    paths = write_data(Path(args.out), _seed(args), int(args.dev), int(args.test), _task_config(args))
    for split, path in paths.items():
        print(f"{split}: {path}")
    return 0


def _seed(args: argparse.Namespace) -> int:
    try:
        return int(args.seed)
    except ValueError:
        raise BadInputError(f"seed must be an integer, got {args.seed!r}") from None


def _role_settings(args: argparse.Namespace, role: str, prefix: str) -> tuple[ModelSpec, TrainConfig]:
    """(ModelSpec, TrainConfig) of one role from its preset and the flags that override it."""
    from dataclasses import replace

    from toy.model import PRESETS
    from toy.train import TrainConfig

    def flag(name: str, default: object = None) -> Any:
        value = getattr(args, f"{prefix}{name}")
        return default if value is None else value

    overrides = {
        name: int(flag(name)) for name in ("hidden", "layers", "heads", "ff") if flag(name) is not None
    }
    spec = replace(PRESETS[role], **overrides)
    config = TrainConfig(
        steps=int(flag("steps", DEFAULT_STEPS[role])),
        lr=float(flag("lr", DEFAULT_LR[role])),
        batch_size=int(args.batch_size),
        seed=_seed(args),
        device=getattr(args, f"{prefix}device", None) or args.device,
        threads=int(args.threads),
    )
    return spec, config


def _run_train(args: argparse.Namespace) -> int:
    from toy.train import train

    spec, config = _role_settings(args, args.size, "")
    out = Path(args.out or f"{DEFAULT_WORK}/{args.size}")
    result = train(
        spec, config, out, resume=not args.no_resume, progress=not args.no_progress, desc=args.size
    )
    print(
        f"{args.size}: {result.steps_done} steps, {result.parameters} parameters, "
        f"{result.seconds:.0f} s this run ({result.total_seconds:.0f} s in all), "
        f"final loss {result.losses[-1][1]:.4f} -> {out}"
    )
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from export.hf_export import ExportOptions, export_checkpoint
    from toy.task import ANSWER_PREFIX, PROMPT_TEMPLATE, STEP_DELIMITER

    options = ExportOptions(
        step_delimiter=STEP_DELIMITER,
        think_end=ANSWER_PREFIX,
        prompt_template=PROMPT_TEMPLATE,
        role=args.role,
        force=True,
    )
    manifest = export_checkpoint(args.checkpoint, args.out, options)
    print(f"{args.out}: {manifest.architecture}, vocab {manifest.vocab_size}, parity {manifest.parity}")
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from toy.evaluate import evaluate
    from toy.task import read_jsonl

    problems = read_jsonl(args.data)
    if args.limit is not None:
        problems = problems[: max(0, args.limit)]
    print(json.dumps(evaluate(args.model, problems, device=args.device).to_dict(), indent=2))
    return 0


def _run_build(args: argparse.Namespace) -> int:
    from toy.build import PairConfig, build_pair

    roles = ("slm", "llm")
    settings = {role: _role_settings(args, role, f"{role}_") for role in roles}
    config = PairConfig(
        out_dir=Path(args.out),
        work_dir=Path(args.work),
        seed=_seed(args),
        task=_task_config(args),
        dev_problems=int(args.dev),
        test_problems=int(args.test),
        specs={role: settings[role][0] for role in roles},
        training={role: settings[role][1] for role in roles},
        until=args.until,
        parallel=not args.sequential,
        progress=not args.no_progress,
    )
    figures = build_pair(config)
    if figures:
        print(json.dumps(figures, indent=2))
    print(f"toy pair written to {config.out_dir} (stages up to {config.until})")
    return 0
