"""`glimp run`: answer one question, streaming each step marked by who wrote it, then a summary.

Every flag has an environment twin (shown in --help). Bad input (an empty question, a bad tau or
share, a model folder for the wrong side, a question that leaves the SLM's context no room to
reason) is reported before any model is loaded; a cloud that does not answer at the start is an
error too, unless --offline-ok.

Exit codes: 0 answered (a banner says when the cloud was down for part of it), 2 bad input or a
cloud error (unreachable at start, wrong token), 3 the SLM's context filled up mid-reasoning (the
answer printed comes from unfinished reasoning).
"""

from __future__ import annotations

import argparse
import codecs
import os
import sys
from pathlib import Path

from edge_client.calibrate import Calibration
from edge_client.config import ANSWER_WRITERS, RouterConfig, StepSettings
from edge_client.console import StreamPrinter, render_summary
from edge_client.cost import CURRENCY_ENV, PRICE_IN_ENV, PRICE_OUT_ENV, Prices
from edge_client.in_process_llm import InProcessLLM, check_role
from edge_client.llm_backend import LLMBackend
from edge_client.loop import EdgeRouter, check_prompt_fits, prompt_messages
from edge_client.policies import POLICY_NAMES, make_policy
from edge_client.trace import RunResult
from glimp_common.env import env_flag, env_float, env_int, env_str
from glimp_common.errors import BadInputError
from onnx_lm import SessionConfig, TextCodec

CONTEXT_FULL_EXIT = 3  # the SLM's context filled up before thinking ended


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """--slm and --providers (shared with `glimp calibrate`)."""
    parser.add_argument("--slm", default=env_str("GLIMP_SLM"), help="exported SLM folder (env GLIMP_SLM)")
    parser.add_argument("--providers", default=env_str("GLIMP_PROVIDERS", "auto"),
                        help="execution providers: auto, cpu, cuda, tensorrt (env GLIMP_PROVIDERS)")
    parser.add_argument("--no-spin-wait", dest="spin_wait", action="store_false",
                        default=env_flag("GLIMP_SPIN_WAIT", True),
                        help="idle ONNX Runtime threads sleep instead of spinning: faster on a busy CPU "
                             "(env GLIMP_SPIN_WAIT=0 turns spinning off)")


def add_step_flags(parser: argparse.ArgumentParser) -> None:
    """Sampling and budget flags (shared with `glimp calibrate`); defaults follow the paper."""
    defaults = StepSettings()
    parser.add_argument("--temperature", type=float,
                        default=env_float("GLIMP_TEMPERATURE", defaults.temperature),
                        help="sampling temperature of steps and answer (env GLIMP_TEMPERATURE)")
    parser.add_argument("--top-p", type=float, default=env_float("GLIMP_TOP_P", defaults.top_p),
                        help="nucleus sampling mass (env GLIMP_TOP_P)")
    parser.add_argument("--max-step-tokens", type=int,
                        default=env_int("GLIMP_MAX_STEP_TOKENS", defaults.max_step_tokens),
                        help="tokens per step at most (env GLIMP_MAX_STEP_TOKENS)")
    parser.add_argument("--budget", type=int, default=env_int("GLIMP_BUDGET", defaults.budget_tokens),
                        help="thinking ends once the steps hold this many tokens (env GLIMP_BUDGET)")
    parser.add_argument("--answer-max-tokens", type=int,
                        default=env_int("GLIMP_ANSWER_MAX_TOKENS", defaults.answer_max_tokens),
                        help="tokens of the final answer at most (env GLIMP_ANSWER_MAX_TOKENS)")
    parser.add_argument("--seed", type=int, default=env_int("GLIMP_SEED"),
                        help="seed for reproducible sampling (env GLIMP_SEED; default: random)")
    parser.add_argument("--delimiter", default=env_str("GLIMP_DELIMITER"),
                        help="step delimiter, backslash escapes allowed, e.g. '\\n\\n' "
                             "(env GLIMP_DELIMITER; default: the SLM manifest's)")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("question", nargs="?", default=env_str("GLIMP_QUESTION"),
                        help="the question to answer (env GLIMP_QUESTION)")
    add_router_flags(parser)
    add_price_flags(parser)
    parser.add_argument("--json", dest="json_path", default=env_str("GLIMP_TRACE_JSON"),
                        help="write the per-step trace as JSON to this file (env GLIMP_TRACE_JSON)")


def add_router_flags(parser: argparse.ArgumentParser, *, offline_ok: bool = True) -> None:
    """The flags that pick the models, the link, the routing and the sampling, with their environment
    twins: `glimp run`'s, shared by `glimp chat` and `glimp api` (read back by `router_config`,
    `llm_backend` and `check_inputs`). `offline_ok=False` leaves out --offline-ok, for a command
    that gives it a meaning of its own."""
    add_model_flags(parser)
    link = parser.add_argument_group("the large model (one of)")
    link.add_argument("--llm-url", default=env_str("GLIMP_LLM_URL"),
                      help="Triton gRPC address HOST:PORT of the cloud LLM (env GLIMP_LLM_URL)")
    link.add_argument("--token-file", default=env_str("GLIMP_EDGE_TOKEN_FILE"),
                      help="file holding the edge token (env GLIMP_EDGE_TOKEN_FILE; or the token "
                           "itself in GLIMP_EDGE_TOKEN)")
    link.add_argument("--tls-ca", default=env_str("GLIMP_TLS_CA"),
                      help="CA certificate (PEM) to verify the server's TLS certificate (env GLIMP_TLS_CA)")
    link.add_argument("--llm-timeout-s", type=float, default=env_float("GLIMP_LLM_TIMEOUT_S", 60.0),
                      help="deadline of every cloud call, seconds (env GLIMP_LLM_TIMEOUT_S)")
    link.add_argument("--retries", type=int, default=env_int("GLIMP_RETRIES", 2),
                      help="retries of a cloud call after a transport error that is safe to retry, within "
                           "its deadline (env GLIMP_RETRIES)")
    link.add_argument("--breaker-s", type=float, default=env_float("GLIMP_BREAKER_S", 2.0),
                      help="after a cloud fault the SLM writes alone this long, then a health check asks the "
                           "cloud again (env GLIMP_BREAKER_S)")
    link.add_argument("--keepalive-s", type=float, default=env_float("GLIMP_KEEPALIVE_S", 30.0),
                      help="ping an idle connection this often, seconds (env GLIMP_KEEPALIVE_S)")
    link.add_argument("--gzip", action="store_true", default=env_flag("GLIMP_GZIP"),
                      help="compress requests with gzip (env GLIMP_GZIP=1)")
    if offline_ok:
        link.add_argument("--offline-ok", action="store_true", default=env_flag("GLIMP_OFFLINE_OK"),
                          help="a cloud that does not answer at the start is no error: the SLM writes alone "
                               "until it does (env GLIMP_OFFLINE_OK=1; default: exit with an error, since a "
                               "wrong URL or port looks just like an outage)")
    link.add_argument("--background-sync", action="store_true", default=env_flag("GLIMP_BACKGROUND_SYNC"),
                      help="send the SLM's steps to the cloud while the SLM writes, so cloud steps start "
                           "warm (env GLIMP_BACKGROUND_SYNC=1)")
    link.add_argument("--llm-local", default=env_str("GLIMP_LLM_LOCAL"),
                      help="exported LLM folder run in this process, no network (env GLIMP_LLM_LOCAL)")
    routing = parser.add_argument_group("routing")
    routing.add_argument("--policy", choices=POLICY_NAMES, default=env_str("GLIMP_POLICY", "threshold"),
                         help="who writes each step (env GLIMP_POLICY)")
    routing.add_argument("--tau", type=float, default=env_float("GLIMP_TAU", 0.9),
                         help="entropy threshold in nats, threshold and step-average (env GLIMP_TAU)")
    routing.add_argument("--share", type=float, default=env_float("GLIMP_SHARE"),
                         help="share of steps for the LLM, share and random policies (env GLIMP_SHARE)")
    routing.add_argument("--calibration", default=env_str("GLIMP_CALIBRATION"),
                         help="file written by `glimp calibrate`, share policy (env GLIMP_CALIBRATION)")
    routing.add_argument("--score-threshold", type=float, default=env_float("GLIMP_SCORE_THRESHOLD", -1.0),
                         help="verify policy: rewrite a draft whose mean LLM log-prob per token is "
                              "below this (env GLIMP_SCORE_THRESHOLD)")
    routing.add_argument("--answer-by", choices=ANSWER_WRITERS, default=env_str("GLIMP_ANSWER_BY", "llm"),
                         help="who writes the final answer (env GLIMP_ANSWER_BY)")
    add_step_flags(parser)


def add_price_flags(parser: argparse.ArgumentParser) -> None:
    """The cloud's prices, for the cost line (`prices` reads them back)."""
    cost = parser.add_argument_group("cost")
    cost.add_argument("--price-in-per-m", type=float, default=env_float(PRICE_IN_ENV),
                      help=f"cloud price per million input tokens, for the cost (env {PRICE_IN_ENV})")
    cost.add_argument("--price-out-per-m", type=float, default=env_float(PRICE_OUT_ENV),
                      help=f"cloud price per million output tokens (env {PRICE_OUT_ENV})")
    cost.add_argument("--currency", default=env_str(CURRENCY_ENV, "USD"),
                      help=f"of the prices (env {CURRENCY_ENV})")


def prices(args: argparse.Namespace) -> Prices | None:
    """The prices given by `add_price_flags`' flags (or their environment twins); None without any."""
    if args.price_in_per_m is None and args.price_out_per_m is None:
        return None
    return Prices(args.price_in_per_m or 0.0, args.price_out_per_m or 0.0, args.currency)


def step_settings(args: argparse.Namespace) -> StepSettings:
    return StepSettings(
        temperature=args.temperature, top_p=args.top_p, max_step_tokens=args.max_step_tokens,
        budget_tokens=args.budget, answer_max_tokens=args.answer_max_tokens, seed=args.seed,
    )


def delimiter(args: argparse.Namespace) -> str | None:
    """The --delimiter flag with backslash escapes decoded ("\\n\\n" -> two newlines)."""
    return codecs.decode(args.delimiter, "unicode_escape") if args.delimiter else None


def router_config(args: argparse.Namespace) -> RouterConfig:
    calibration = Calibration.load(args.calibration) if args.calibration else None
    if calibration is not None and args.slm:
        calibration.check_slm(args.slm)
    policy = make_policy(args.policy, tau=args.tau, share=args.share, calibration=calibration,
                         score_threshold=args.score_threshold, seed=args.seed or 0)
    return RouterConfig(policy=policy, steps=step_settings(args), answer_by=args.answer_by,
                        delimiter=delimiter(args))


def check_inputs(args: argparse.Namespace, config: RouterConfig) -> None:
    """Everything that can be checked without loading a model."""
    check_models(args, config)
    check_prompt_fits(TextCodec.load(Path(args.slm), check_role(args.slm, "slm")),
                      prompt_messages(args.question), config)


def check_models(args: argparse.Namespace, config: RouterConfig) -> None:
    """The model flags (`add_router_flags`): an SLM folder, one LLM when the routing needs it, each
    folder of the right role. BadInputError naming the flag otherwise."""
    if not args.slm:
        raise BadInputError("no SLM folder: give --slm DIR (or GLIMP_SLM)")
    if args.llm_url and args.llm_local:
        raise BadInputError("give either --llm-url (the cloud) or --llm-local (in process), not both")
    if config.needs_llm and not (args.llm_url or args.llm_local):
        raise BadInputError(
            f"policy {args.policy!r} with --answer-by {args.answer_by} needs the large model: give --llm-url "
            "HOST:PORT or --llm-local DIR (or use --policy local --answer-by slm)"
        )
    check_role(args.slm, "slm")
    if args.llm_local:
        check_role(args.llm_local, "llm")


def edge_token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        path = Path(args.token_file)
        if not path.is_file():
            raise BadInputError(f"token file {path} does not exist")
        return path.read_text(encoding="utf-8").strip()
    return os.environ.get("GLIMP_EDGE_TOKEN") or None


def llm_backend(args: argparse.Namespace, session: SessionConfig, *,
                start_check: bool = False) -> LLMBackend | None:
    """The LLM the flags name. `start_check` runs the cloud's start check now (a session that
    waits for its first question, as `glimp chat` does, must not open on a cloud that is down)."""
    if args.llm_local:
        return InProcessLLM.load(args.llm_local, session)
    if args.llm_url:
        from edge_client.link import CloudLinkConfig, ResilienceConfig, ResilientLLM, RetryPolicy

        tls_ca = Path(args.tls_ca) if args.tls_ca else None
        link = CloudLinkConfig(args.llm_url, token=edge_token(args), timeout_s=args.llm_timeout_s,
                               tls_root_cert=tls_ca, gzip=args.gzip, keepalive_time_s=args.keepalive_s)
        resilience = ResilienceConfig(retry=RetryPolicy(max_retries=args.retries), breaker_s=args.breaker_s,
                                      background_sync=args.background_sync, offline_ok=args.offline_ok)
        cloud = ResilientLLM.connect(link, resilience)
        if start_check:
            try:
                cloud.check()
            except BaseException:
                cloud.close()
                raise
        return cloud
    return None


def run(args: argparse.Namespace) -> int:
    prompt_messages(args.question)  # an empty question fails first
    config = router_config(args)
    check_inputs(args, config)
    session = SessionConfig(providers=args.providers, spin_wait=args.spin_wait)
    llm = llm_backend(args, session) if config.needs_llm else None
    try:
        router = EdgeRouter.from_folders(args.slm, llm, config, session)
        result = router.answer(args.question, on_event=StreamPrinter(sys.stdout))
        print()
        print(f"answer: {result.answer.strip()}", flush=True)  # before the link's close drains
        print(render_summary(result, prices(args)))
    finally:
        if llm is not None:
            llm.close()  # the cloud link's health monitor, the context's queued close, the channel
    if args.json_path:
        Path(args.json_path).write_text(result.to_json(), encoding="utf-8")
        print(f"trace: {args.json_path}")
    if result.thinking_stop == "context":
        print(f"glimp run: error: {context_full_message(result, router.slm.manifest.max_context_tokens)}",
              file=sys.stderr)
        return CONTEXT_FULL_EXIT
    return 0


def context_full_message(result: RunResult, context_tokens: int) -> str:
    """What to tell a user whose question filled the SLM's context before thinking ended."""
    steps = len(result.steps)
    return (
        f"the small model's context ({context_tokens} tokens) filled up after {steps} reasoning "
        f"step{'' if steps == 1 else 's'}, before thinking ended; the answer above comes from unfinished "
        "reasoning. Shorten the question, or use an SLM with a longer context"
    )
