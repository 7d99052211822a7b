"""`glimp <command>`: the one console entry point.

Each subcommand lives in its role's package as a module with `configure_parser(parser)` and
`run(args) -> int`. Only the chosen module is imported, so an edge-only install (no torch, no
Triton server, no export stack) can still run `glimp run`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

# command name -> (module, one-line help). Ordered as a user meets them.
COMMANDS: dict[str, tuple[str, str]] = {
    "export": ("export.commands", "export a local Hugging Face checkpoint to an ONNX model folder"),
    "toy": ("toy.commands", "make, train, export and evaluate the toy reasoning pair"),
    "serve": ("cloud_service.commands", "serve an exported LLM on a local Triton server"),
    "run": ("edge_client.run_command", "answer one question with the edge/cloud split shown"),
    "calibrate": ("edge_client.calibrate_command", "find the entropy threshold for a target cloud share"),
    "bench": ("bench.e2e.commands", "compare routing systems end to end over an emulated network"),
    "bench-decode": ("bench.decode.speed", "decode tokens/s: onnx_lm vs optimum vs onnxruntime-genai"),
    "gpu-check": ("bench.decode.gpu_check", "CUDA provider, KV on the GPU, CPU-vs-GPU parity and speed"),
    "demo": ("glimprouter.demo", "set up the toy pair and a local Triton, then answer a question"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glimp", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--log-level", default=os.environ.get("GLIMP_LOG_LEVEL", "WARNING"),
        help="logging level (env GLIMP_LOG_LEVEL)",
    )
    commands = "\n".join(f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items())
    parser.epilog = f"commands:\n{commands}"
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="command")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    top = _top_parser().parse_args(argv)
    logging.basicConfig(level=top.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    module_name, help_ = COMMANDS[top.command]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"glimp {top.command}", description=help_)
    module.configure_parser(parser)
    args = parser.parse_args(top.rest)
    from onnx_lm.errors import GlimpError

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
