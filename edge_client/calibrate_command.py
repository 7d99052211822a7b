"""`glimp calibrate`: find the entropy threshold that sends a target share of steps to the LLM.

Runs the SLM alone over a JSONL file of questions (`{"id": ..., "question": ...}` per line),
collects the first-token entropy of every step and writes the tau for `--share` (plus every
entropy, so `glimp run --policy share --share X` can use another share from the same file).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_client.calibrate import calibrate, read_questions
from edge_client.config import RouterConfig
from edge_client.in_process_llm import check_role
from edge_client.loop import EdgeRouter
from edge_client.policies import AlwaysLocal, check_share
from edge_client.run_command import add_model_flags, add_step_flags, delimiter, step_settings
from glimp_common.env import env_float, env_int, env_str
from glimp_common.errors import BadInputError
from onnx_lm import SessionConfig


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add_model_flags(parser)
    parser.add_argument("--questions", default=env_str("GLIMP_CALIBRATION_QUESTIONS"),
                        help="JSONL file of questions (env GLIMP_CALIBRATION_QUESTIONS)")
    parser.add_argument("--share", type=float, default=env_float("GLIMP_SHARE", 0.2),
                        help="target share of steps for the LLM, in [0, 1] (env GLIMP_SHARE)")
    parser.add_argument("--limit", type=int, default=env_int("GLIMP_CALIBRATION_LIMIT"),
                        help="use only the first N questions (env GLIMP_CALIBRATION_LIMIT)")
    parser.add_argument("--out", default=env_str("GLIMP_CALIBRATION", "calibration.json"),
                        help="where to write the calibration (env GLIMP_CALIBRATION)")
    add_step_flags(parser)


def run(args: argparse.Namespace) -> int:
    check_share(args.share)
    if not args.slm:
        raise BadInputError("no SLM folder: give --slm DIR (or GLIMP_SLM)")
    if not args.questions:
        raise BadInputError("no questions: give --questions FILE.jsonl (or GLIMP_CALIBRATION_QUESTIONS)")
    if args.limit is not None and args.limit < 1:
        raise BadInputError(f"--limit must be >= 1, got {args.limit}")
    config = RouterConfig(policy=AlwaysLocal(), steps=step_settings(args), answer_by="none",
                          delimiter=delimiter(args))
    questions = read_questions(args.questions, args.limit)
    check_role(args.slm, "slm")
    session = SessionConfig(providers=args.providers, spin_wait=args.spin_wait)
    router = EdgeRouter.from_folders(args.slm, None, config, session)
    result = calibrate(router, questions, args.share)
    path = result.save(Path(args.out))
    print(f"tau {result.tau:.4f} nats sends {args.share:.0%} of {result.steps} steps "
          f"({result.questions} questions) to the LLM; written to {path}")
    return 0
