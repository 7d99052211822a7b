"""`glimp bench`: the paper's comparison end to end, over a real Triton server and an emulated link.

Starts one local tritonserver with the LLM (random edge token), puts the link emulator in front
of it (40 ms round trip, 20 Mbit/s by default; `--loopback` for none), loads the SLM once, and
runs every chosen system over the same problems with the same seeds, one problem at a time.
Writes table.md, results.csv, results.json, problems.jsonl, pareto.png, latency_split.png and
run.json to --out. Every flag has an environment twin (see --help).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edge_client.run_command import add_price_flags, prices
from glimp_common.env import env_flag, env_float, env_int, env_str
from glimp_common.errors import BadInputError

TOY = Path("models/toy-pair")


def _floats(text: str, what: str, *, allow_empty: bool = False) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise BadInputError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not values and not allow_empty:
        raise BadInputError(f"{what} is empty; give at least one number")
    return values


def configure_parser(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("problems and models")
    data.add_argument("--problems", default=env_str("GLIMP_BENCH_PROBLEMS", str(TOY / "data/test.jsonl")),
                      help="JSONL of {id, question, answer} (env GLIMP_BENCH_PROBLEMS)")
    data.add_argument("--dev-problems",
                      default=env_str("GLIMP_BENCH_DEV_PROBLEMS", str(TOY / "data/dev.jsonl")),
                      help="JSONL the share calibrations use, never the test problems "
                           "(env GLIMP_BENCH_DEV_PROBLEMS)")
    data.add_argument("--dev-limit", type=int, default=env_int("GLIMP_BENCH_DEV_LIMIT", 400),
                      help="dev problems to calibrate on (env GLIMP_BENCH_DEV_LIMIT)")
    data.add_argument("--limit", type=int, default=env_int("GLIMP_BENCH_LIMIT"),
                      help="only the first N problems (env GLIMP_BENCH_LIMIT)")
    data.add_argument("--slm", default=env_str("GLIMP_SLM", str(TOY / "slm")),
                      help="SLM folder (env GLIMP_SLM)")
    data.add_argument("--llm", default=env_str("GLIMP_LLM", str(TOY / "llm")),
                      help="LLM folder, served by a local Triton (env GLIMP_LLM)")
    data.add_argument("--checker", default=env_str("GLIMP_BENCH_CHECKER", "exact-int"),
                      help="answer checker: exact-int, exact-text or package.module:factory "
                           "(env GLIMP_BENCH_CHECKER)")
    systems = parser.add_argument_group("systems")
    systems.add_argument("--systems", default=env_str("GLIMP_BENCH_SYSTEMS", "all"),
                         help="comma-separated: all, slm, llm-one-call, llm-steps, glimp-tau, glimp-share, "
                              "random, step-average, verify, resend, and blocking-close (not in all: "
                              "GlimpRouter's rows again, closing each context with a blocking round "
                              "trip, beside the background close) (env GLIMP_BENCH_SYSTEMS)")
    systems.add_argument("--taus", default=env_str("GLIMP_BENCH_TAUS", "0.1,0.3,0.6,1.0"),
                         help="GlimpRouter thresholds in nats (env GLIMP_BENCH_TAUS)")
    systems.add_argument("--shares", default=env_str("GLIMP_BENCH_SHARES", "0.1,0.2,0.3"),
                         help="GlimpRouter target cloud shares; random and step-average match them "
                              "(env GLIMP_BENCH_SHARES)")
    systems.add_argument("--verify-shares", default=env_str("GLIMP_BENCH_VERIFY_SHARES"),
                         help="the shares (of --shares) verify is matched at; it makes one LLM call per "
                              "step, so it is the slowest (env GLIMP_BENCH_VERIFY_SHARES; default: all)")
    systems.add_argument("--verify-thresholds", default=env_str("GLIMP_BENCH_VERIFY_THRESHOLDS", ""),
                         help="generate-then-verify rows with fixed thresholds, on top of those matched to "
                              "each share: rewrite a draft whose mean LLM log-prob per token is below it "
                              "(env GLIMP_BENCH_VERIFY_THRESHOLDS; default none)")
    link = parser.add_argument_group("the emulated link")
    link.add_argument("--rtt-ms", type=float, default=env_float("GLIMP_BENCH_RTT_MS", 40.0),
                      help="round-trip delay added by the emulator (env GLIMP_BENCH_RTT_MS)")
    link.add_argument("--bandwidth-mbit", type=float, default=env_float("GLIMP_BENCH_BANDWIDTH_MBIT", 20.0),
                      help="each direction, 0: unlimited (env GLIMP_BENCH_BANDWIDTH_MBIT)")
    link.add_argument("--background-sync", action="store_true",
                      default=env_flag("GLIMP_BENCH_BACKGROUND_SYNC"),
                      help="the link pushes SLM-written steps to the cloud while the SLM works "
                           "(env GLIMP_BENCH_BACKGROUND_SYNC=1)")
    link.add_argument("--loopback", action="store_true",
                      default=env_flag("GLIMP_BENCH_LOOPBACK"),
                      help="no emulator: dial the server directly (env GLIMP_BENCH_LOOPBACK=1)")
    gen = parser.add_argument_group("generation")
    gen.add_argument("--seed", type=int, default=env_int("GLIMP_SEED", 0),
                     help="seed of every system (env GLIMP_SEED)")
    gen.add_argument("--temperature", type=float, default=env_float("GLIMP_TEMPERATURE", 0.0),
                     help="0: greedy, as the toy pair was measured (the paper samples at 0.6) "
                          "(env GLIMP_TEMPERATURE)")
    gen.add_argument("--top-p", type=float, default=env_float("GLIMP_TOP_P", 1.0), help="(env GLIMP_TOP_P)")
    gen.add_argument("--max-step-tokens", type=int, default=env_int("GLIMP_MAX_STEP_TOKENS", 512),
                     help="(env GLIMP_MAX_STEP_TOKENS)")
    gen.add_argument("--budget", type=int, default=env_int("GLIMP_BUDGET", 8192),
                     help="thinking token budget (env GLIMP_BUDGET)")
    gen.add_argument("--answer-max-tokens", type=int, default=env_int("GLIMP_ANSWER_MAX_TOKENS", 2048),
                     help="(env GLIMP_ANSWER_MAX_TOKENS)")
    add_price_flags(parser)  # the cost section of table.md (none without prices)
    run_group = parser.add_argument_group("running")
    run_group.add_argument("--providers", default=env_str("GLIMP_PROVIDERS", "auto"),
                           help="execution providers of both models (env GLIMP_PROVIDERS)")
    run_group.add_argument("--threads", type=int, default=env_int("GLIMP_BENCH_THREADS", 1),
                           help="intra-op threads of each model, 0: ONNX Runtime's default "
                                "(env GLIMP_BENCH_THREADS)")
    run_group.add_argument("--out", default=env_str("GLIMP_BENCH_OUT", "bench/results/latest"),
                           help="output folder (env GLIMP_BENCH_OUT)")
    run_group.add_argument("--no-progress", action="store_true",
                           default=env_flag("GLIMP_BENCH_NO_PROGRESS"),
                           help="no progress bar (env GLIMP_BENCH_NO_PROGRESS=1)")


def run(args: argparse.Namespace) -> int:
    from bench.e2e.output import write_run
    from bench.e2e.report import close_table, markdown_table, summarize
    from bench.e2e.rig import BenchRig
    from cloud_service.launcher import sigterm_unwinds

    plan, problems, dev_problems, checker, rig_config = _prepare(args)
    started = time.perf_counter()
    info = _run_info(args, plan, len(problems))
    # SIGTERM unwinds like Ctrl-C, so the rig's server is stopped too.
    with sigterm_unwinds(), BenchRig(rig_config) as rig, \
            _progress(args, plan, len(problems), len(dev_problems)) as bar:
        from bench.e2e.runner import run_plan

        info["server_ready_s"] = rig.server_ready_s()

        def save_partial(runs: list[Any], dev: Any) -> None:  # a long run that dies keeps what it measured
            write_run(Path(args.out), runs, dev, {**info, "partial": True}, plots=False)

        runs, dev = run_plan(rig, plan, problems, dev_problems, checker, bar, save_partial)
    info["bench_wall_s"] = round(time.perf_counter() - started, 1)
    # Other work on the machine slows every system alike but inflates the absolute times: record it.
    info["load_average_1_5_15_at_end"] = list(os.getloadavg())
    paths = write_run(Path(args.out), runs, dev, info)
    summaries = [summarize(r) for r in runs]
    print(markdown_table(summaries))
    if closes := close_table(summaries):
        print(closes)
    print("\n".join(f"{kind}: {path}" for kind, path in paths.items()))
    return 0


def _prepare(args: argparse.Namespace) -> tuple[Any, ...]:
    """Everything checkable before a server starts: flags, problem files, checker, prompt sizes."""
    from bench.e2e.checkers import check_references, make_checker
    from bench.e2e.problems import read_problems
    from bench.e2e.rig import RigConfig
    from bench.e2e.runner import BenchPlan
    from bench.e2e.systems import parse_families
    from edge_client.config import StepSettings
    from edge_client.in_process_llm import check_role
    from edge_client.loop import check_prompt_fits, prompt_messages
    from netem import LinkProfile
    from onnx_lm import TextCodec

    steps = StepSettings(temperature=args.temperature, top_p=args.top_p, max_step_tokens=args.max_step_tokens,
                         budget_tokens=args.budget, answer_max_tokens=args.answer_max_tokens, seed=args.seed)
    fixed_verify = _floats(args.verify_thresholds, "--verify-thresholds", allow_empty=True)
    verify_shares = _floats(args.verify_shares, "--verify-shares") if args.verify_shares else None
    plan = BenchPlan(parse_families(args.systems), _floats(args.taus, "--taus"),
                     _floats(args.shares, "--shares"), fixed_verify, steps, args.seed, verify_shares)
    if args.seed < 0:
        raise BadInputError(f"--seed must be >= 0, got {args.seed}")
    problems = read_problems(args.problems, args.limit)
    dev_problems = read_problems(args.dev_problems, args.dev_limit) if plan.needs_dev else []
    manifest = check_role(args.slm, "slm")
    check_role(args.llm, "llm")
    checker = make_checker(args.checker, manifest.think_end)
    check_references(checker, [p.answer for p in problems])
    codec = TextCodec.load(Path(args.slm), manifest)
    for problem in [*problems, *dev_problems]:
        check_prompt_fits(codec, prompt_messages(problem.question))
    link = None if args.loopback else LinkProfile(args.rtt_ms / 1e3, args.bandwidth_mbit, "bench")
    rig = RigConfig(Path(args.slm), Path(args.llm), link, args.providers, args.threads,
                    background_sync=args.background_sync)
    return plan, problems, dev_problems, checker, rig


def _progress(args: argparse.Namespace, plan: Any, problems: int, dev_problems: int) -> Any:
    from tqdm import tqdm

    total = problems * plan.system_count() + (dev_problems if plan.needs_dev else 0)
    return tqdm(total=total, file=sys.stderr, disable=args.no_progress, unit="problem", dynamic_ncols=True)


def _command_line() -> str:
    """How this run was started, as `glimp ...` (top-level flags such as --log-level kept)."""
    if "bench" in sys.argv[1:]:
        return shlex.join(["glimp", *sys.argv[1:]])
    return "glimp bench (called from Python: every flag's value is under settings)"


def _run_info(args: argparse.Namespace, plan: Any, problems: int) -> dict[str, Any]:
    from bench.e2e.machine import machine_info, now_utc

    link = (f"{args.rtt_ms:g} ms RTT, {args.bandwidth_mbit:g} Mbit/s" if not args.loopback
            else "loopback (no emulator)")
    sampling = (f"temperature {args.temperature:g}, top-p {args.top_p:g}" if args.temperature
                else "greedy")
    return {
        "title": f"{problems} problems of {args.problems}; link {link}; {sampling}; seed {args.seed}",
        "date": now_utc(),
        "command": _command_line(),
        "machine": machine_info(),
        "settings": {key: value for key, value in vars(args).items()},
        "systems_planned": plan.system_count(),
        "link": link,
        "sampling": sampling,
        "prices": asdict(price_list) if (price_list := prices(args)) else None,
    }
