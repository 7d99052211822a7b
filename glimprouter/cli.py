"""`glimp <command>`: the one console entry point.

Each subcommand lives in its role's package as a module with `configure_parser(parser)` and
`run(args) -> int`. Only the chosen module is imported, so an edge-only install (no torch, no
Triton server, no export stack) can still run `glimp run`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import logging
import signal
import sys
from collections.abc import Sequence

from glimp_common.env import env_str

# command name -> (module, one-line help). Ordered as a user meets them.
COMMANDS: dict[str, tuple[str, str]] = {
    "export": ("export.commands", "export a local Hugging Face checkpoint to an ONNX model folder"),
    "toy": ("toy.commands", "make, train, export and evaluate the toy reasoning pair"),
    "serve": ("cloud_service.commands", "serve an exported LLM on a local Triton server"),
    "run": ("edge_client.run_command", "answer one question with the edge/cloud split shown"),
    "chat": ("edge_client.chat_command", "a multi-turn conversation in the terminal, continuing both sides"),
    "api": ("edge_client.api.command", "serve an OpenAI-compatible chat endpoint on this device"),
    "calibrate": ("edge_client.calibrate_command", "find the entropy threshold for a target cloud share"),
    "bench": ("bench.e2e.commands", "compare routing systems end to end over an emulated network"),
    "bench-decode": ("bench.decode.speed", "decode tokens/s: onnx_lm vs optimum vs onnxruntime-genai"),
    "gpu-check": ("bench.decode.gpu_check", "CUDA provider, KV on the GPU, CPU-vs-GPU parity and speed"),
    "demo": ("glimprouter.demo", "set up the toy pair and a local Triton, then answer a question"),
}


LOG_LEVEL_ENV = "GLIMP_LOG_LEVEL"


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glimp", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    parser.add_argument(
        "--log-level", default=env_str(LOG_LEVEL_ENV, "WARNING"),
        help=f"logging level, also accepted after the command (env {LOG_LEVEL_ENV}; default %(default)s)",
    )
    commands = "\n".join(f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items())
    parser.epilog = f"commands:\n{commands}"
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="command")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def package_version() -> str:
    """The installed glimprouter distribution's version ("unknown" when run from an uninstalled tree)."""
    try:
        return importlib.metadata.version("glimprouter")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def command_parser(command: str, log_level: str) -> argparse.ArgumentParser:
    """The parser of `glimp <command>`: its module's flags, every default shown, and --log-level."""
    module_name, help_ = COMMANDS[command]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"glimp {command}", description=help_,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    module.configure_parser(parser)
    _add_log_level(parser, log_level)
    return parser


def _add_log_level(parser: argparse.ArgumentParser, default: str) -> None:
    help_ = f"logging level (env {LOG_LEVEL_ENV})"
    parser.add_argument("--log-level", default=default, help=help_)
    for sub in _subcommand_parsers(parser):
        # SUPPRESS: a subcommand's default would overwrite the value given before it.
        sub.add_argument("--log-level", default=argparse.SUPPRESS, help=help_)


def _subcommand_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    # A command with its own subcommands (`glimp toy make-data ...`) takes --log-level after them too.
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.formatter_class = argparse.ArgumentDefaultsHelpFormatter
                found.append(sub)
                found.extend(_subcommand_parsers(sub))
    return found


# Commands that take Ctrl-C in their main thread alone (glimp chat's prompt, edge_client/chat_command.py).
# Importing them starts threads (numpy's BLAS pool, ONNX Runtime's): SIGINT is blocked before, so
# those threads are born with it blocked and cannot take a Ctrl-C the prompt's read never sees;
# the command unblocks it in its main thread.
MAIN_THREAD_CTRL_C = ("chat",)


def main(argv: Sequence[str] | None = None) -> int:
    top = _top_parser().parse_args(argv)
    if top.command not in MAIN_THREAD_CTRL_C:
        return _run(top)
    # Restored however the command ends (--help, a bad flag, an error): a caller in process, and
    # every child it starts later, must not inherit SIGINT blocked.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return _run(top)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _run(top: argparse.Namespace) -> int:
    from glimp_common.errors import GlimpError

    try:
        parser = command_parser(top.command, top.log_level)
        args = parser.parse_args(top.rest)
    except GlimpError as exc:  # a bad environment twin, found while the defaults are read
        print(f"glimp {top.command}: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(COMMANDS[top.command][0])
    try:
        return int(module.run(args))
    except GlimpError as exc:
        print(f"glimp {top.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"glimp {top.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
