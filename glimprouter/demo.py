"""`glimp demo`: the whole system on one machine, in seconds.

Starts a real Triton server with the shipped toy LLM (random edge token, free ports), puts the
project's link emulator in front of it (a 40 ms, 20 Mbit/s link by default), and answers one
question with the shipped toy SLM on the device side, streaming each step with who wrote it,
then the edge/cloud split. Everything it starts is stopped on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from glimp_common.env import env_float, env_str
from glimp_common.errors import BadInputError

DEFAULT_PAIR = Path("models/toy-pair")
# A dev-set question whose third step the SLM is unsure of (H = 1.3 nats): the split shows.
DEFAULT_QUESTION = "10-4*5-20+77"


def _env(name: str, default: str) -> str:
    return env_str(f"GLIMP_DEMO_{name}", default)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "question", nargs="?", default=_env("QUESTION", DEFAULT_QUESTION),
        help=f"a toy arithmetic question (default {DEFAULT_QUESTION}; env GLIMP_DEMO_QUESTION)",
    )
    parser.add_argument("--pair", type=Path, default=Path(_env("PAIR", str(DEFAULT_PAIR))),
                        help="folder holding slm/ and llm/ (env GLIMP_DEMO_PAIR)")
    parser.add_argument(
        "--tau", type=float, default=env_float("GLIMP_DEMO_TAU", 0.4),
        help="entropy threshold in nats: steps at or above it go to the cloud (env GLIMP_DEMO_TAU)",
    )
    parser.add_argument("--rtt-ms", type=float, default=env_float("GLIMP_DEMO_RTT_MS", 40.0),
                        help="emulated round trip to the cloud (env GLIMP_DEMO_RTT_MS)")
    parser.add_argument("--bandwidth-mbit", type=float, default=env_float("GLIMP_DEMO_BANDWIDTH_MBIT", 20.0),
                        help="emulated bandwidth each way; 0: unlimited (env GLIMP_DEMO_BANDWIDTH_MBIT)")
    parser.add_argument("--json", dest="json_path", default=env_str("GLIMP_DEMO_JSON"),
                        help="also write the per-step trace as JSON here (env GLIMP_DEMO_JSON)")


def run(args: argparse.Namespace) -> int:
    slm_dir, llm_dir = args.pair / "slm", args.pair / "llm"
    for folder in (slm_dir, llm_dir):
        if not (folder / "manifest.json").is_file():
            raise BadInputError(
                f"{folder} is not an exported model; rebuild the toy pair with `glimp toy build`"
            )
    from cloud_service.launcher import sigterm_unwinds
    from cloud_service.security import new_token

    token = new_token()
    # SIGTERM unwinds like Ctrl-C, so the server this started is stopped too.
    with sigterm_unwinds(), _local_cloud(llm_dir, token) as server_url, \
            _emulated_link(server_url, args) as link_url:
        result = _answer(args, slm_dir, link_url, token)
    _print_result(result, args)
    return 0


@contextlib.contextmanager
def _local_cloud(llm_dir: Path, token: str) -> Iterator[str]:
    from cloud_service.launcher import local_server

    with tempfile.TemporaryDirectory(prefix="glimp-demo-") as folder:
        print(f"starting Triton with {llm_dir} ...", flush=True)
        with local_server(llm_dir, Path(folder) / "repository", token=token) as server:
            print(f"cloud ready: gRPC {server.grpc_url}, metrics {server.metrics_url}", flush=True)
            yield server.grpc_url


@contextlib.contextmanager
def _emulated_link(server_url: str, args: argparse.Namespace) -> Iterator[str]:
    from netem import LinkEmulator, LinkProfile

    host, port = server_url.rsplit(":", 1)
    profile = LinkProfile(rtt_s=args.rtt_ms / 1000, bandwidth_mbit_s=args.bandwidth_mbit, name="demo")
    with LinkEmulator(host, int(port), profile) as link:
        print(f"link: {args.rtt_ms:g} ms round trip, {args.bandwidth_mbit:g} Mbit/s (emulated)\n", flush=True)
        yield link.address


def _answer(args: argparse.Namespace, slm_dir: Path, link_url: str, token: str):  # type: ignore[no-untyped-def]
    from edge_client import EdgeRouter, EntropyThreshold, RouterConfig, StepSettings, StreamPrinter
    from edge_client.link import CloudLinkConfig, ResilientLLM

    # The toy task has one right answer per step: greedy decoding, as its accuracy was measured.
    config = RouterConfig(policy=EntropyThreshold(args.tau), steps=StepSettings(temperature=0.0, seed=0))
    # The resilient link, as `glimp run` uses it: deadlines, bounded retries, breaker, offline mode.
    with ResilientLLM.connect(CloudLinkConfig(link_url, token=token, timeout_s=30.0)) as llm:
        router = EdgeRouter.from_folders(slm_dir, llm, config)
        print(f"question: {args.question}  (tau = {args.tau:g} nats)", flush=True)
        started = time.perf_counter()
        result = router.answer(args.question, on_event=StreamPrinter(sys.stdout))
        print(f"\n(answered in {time.perf_counter() - started:.2f} s)")
        return result


def _print_result(result, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    from edge_client import render_summary

    print(f"answer: {result.answer.strip()}")
    print(render_summary(result))
    if args.json_path:
        Path(args.json_path).write_text(result.to_json(), encoding="utf-8")
        print(f"trace: {args.json_path}")
