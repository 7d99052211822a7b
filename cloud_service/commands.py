"""`glimp serve MODEL_DIR`: the LLM on a local Triton server (the real `tritonserver` binary).

Two engines behind the same model, gateway and contract (cloud_service/engine_choice.py): an
exported ONNX folder runs on ONNX Runtime, a Hugging Face checkpoint folder on vLLM (continuous
batching, its prefix cache holding the contexts' KV) in the cloud environment (`make cloud-venv`).

Refuses an SLM folder and ports already in use before anything starts; builds the model
repository, starts the server, waits until a real tiny inference succeeds and checks that the
listener answering is the server it started; prints the gRPC and metrics endpoints and the time
to ready, and stops cleanly on Ctrl-C or SIGTERM (shared-memory files removed). A server that
fails prints one line (the cause from its log, and the log's path) and exits non-zero.
`--build-only` writes a self-contained repository and prints the equivalent command for
NVIDIA's Triton container instead of starting anything. Every flag has an environment twin.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import FrameType

from cloud_service.balancer.fleet import MAX_REPLICAS, LocalFleet
from cloud_service.balancer.fleet_command import fleet_work_dir, start_fleet
from cloud_service.balancer.nginx_config import AFFINITY, POLICIES
from cloud_service.engine_choice import AUTO, ENGINES, ONNX, VLLM, Engine, choose_engine
from cloud_service.errors import ServerStartError
from cloud_service.launcher import ServerConfig, TritonServer
from cloud_service.ports import check_ports_free, owns_listener
from cloud_service.repository import RepositorySettings, build_repository
from cloud_service.security import TOKEN_ENV, TOKEN_FILE_ENV, TLSFiles, read_token
from cloud_service.server_flags import TritonFlags
from cloud_service.serving_config import ServingConfig
from cloud_service.supervisor import Supervisor, SupervisorConfig
from cloud_service.vllm import repository as vllm_repository
from glimp_common.env import env_flag, env_float, env_int, env_path, env_str, unescaped
from glimp_common.errors import BadInputError
from onnx_lm.manifest import check_role
from protos.contract import GRPC_AUTH_METADATA_KEY, MODEL_NAME

PRODUCTION_IMAGE = "nvcr.io/nvidia/tritonserver:25.08-py3"  # CUDA 13, as onnxruntime-gpu 1.31 needs
VLLM_IMAGE = "nvcr.io/nvidia/tritonserver:25.08-vllm-python-py3"  # GPU vLLM in Triton's own Python
# A readiness inference of the vLLM engine joins the running batch: give it longer before healing
# (a heal restarts an engine that takes a minute to load).
_VLLM_CHECK_TIMEOUT_S = 30.0
_MIB = 1 << 20
# Shell expressions the container's bash expands: the edge token from its environment, and a fresh
# admin token nobody needs to know (model control stays closed).
_CONTAINER_TOKEN = "$GLIMP_EDGE_TOKEN"
_CONTAINER_ADMIN_TOKEN = "$(head -c 24 /dev/urandom | base64 | tr -dc A-Za-z0-9)"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    defaults = ServingConfig
    parser.add_argument("model_dir", type=Path, nargs="?", default=env_path("GLIMP_SERVE_MODEL_DIR"),
                        help="the LLM: an exported ONNX folder (from `glimp export`) or a Hugging Face "
                        "checkpoint folder (env GLIMP_SERVE_MODEL_DIR)")
    parser.add_argument("--engine", choices=ENGINES, default=env_str("GLIMP_ENGINE", AUTO),
                        help="onnx (ONNX Runtime, one step at a time) or vllm (continuous batching; "
                        "needs `make cloud-venv`); auto: onnx for an exported folder, vllm for a checkpoint "
                        "(env GLIMP_ENGINE)")
    parser.add_argument("--prompt-template", default=env_str("GLIMP_PROMPT_TEMPLATE"),
                        help="vllm, a checkpoint without a chat template: how a question becomes the "
                        "prompt, with {question} (the toy pair: 'Q:{question}\\n') "
                        "(env GLIMP_PROMPT_TEMPLATE)")
    parser.add_argument("--step-delimiter", default=env_str("GLIMP_STEP_DELIMITER", "\\n"),
                        help="vllm: the text between reasoning steps (env GLIMP_STEP_DELIMITER)")
    parser.add_argument("--speculative", default=env_str("GLIMP_SPECULATIVE"),
                        help="vllm: speculative decoding inside each cloud step: ngram (prompt lookup), or "
                        "a draft checkpoint folder sharing the model's tokenizer (env GLIMP_SPECULATIVE)")
    parser.add_argument("--speculative-tokens", type=int, default=env_int("GLIMP_SPECULATIVE_TOKENS", 3),
                        help="vllm: tokens proposed per verification pass (env GLIMP_SPECULATIVE_TOKENS)")
    parser.add_argument("--host", default=env_str("GLIMP_SERVE_HOST", defaults.host),
                        help="address to listen on; 0.0.0.0 for every interface (env GLIMP_SERVE_HOST)")
    parser.add_argument("--grpc-port", type=int, default=env_int("GLIMP_GRPC_PORT", defaults.grpc_port),
                        help="gRPC port (env GLIMP_GRPC_PORT)")
    parser.add_argument("--metrics-port", type=int,
                        default=env_int("GLIMP_METRICS_PORT", defaults.metrics_port),
                        help="Prometheus metrics port (env GLIMP_METRICS_PORT)")
    parser.add_argument("--token-file", type=Path, default=env_path(TOKEN_FILE_ENV),
                        help=f"file holding the shared edge token (env {TOKEN_FILE_ENV}; or the token "
                        f"itself in {TOKEN_ENV})")
    parser.add_argument("--insecure-no-token", action="store_true",
                        default=env_flag("GLIMP_INSECURE_NO_TOKEN"),
                        help="serve without an edge token: anyone reaching the port can use the model "
                        "(env GLIMP_INSECURE_NO_TOKEN)")
    parser.add_argument("--tls-cert", type=Path, default=env_path("GLIMP_TLS_CERT"),
                        help="PEM certificate: serve gRPC over TLS (env GLIMP_TLS_CERT)")
    parser.add_argument("--tls-key", type=Path, default=env_path("GLIMP_TLS_KEY"),
                        help="PEM private key of --tls-cert (env GLIMP_TLS_KEY)")
    parser.add_argument("--tls-server-name", default=env_str("GLIMP_TLS_SERVER_NAME"),
                        help="name in --tls-cert, when it does not cover 127.0.0.1 (the readiness check "
                        "connects locally) (env GLIMP_TLS_SERVER_NAME)")
    parser.add_argument("--cache-budget-mb", type=float,
                        default=env_float("GLIMP_CACHE_BUDGET_MB", defaults.cache_budget_bytes / _MIB),
                        help="context cache budget, MiB: KV + text (onnx), vLLM's KV space (vllm) "
                        "(env GLIMP_CACHE_BUDGET_MB)")
    parser.add_argument("--idle-ttl-s", type=float,
                        default=env_float("GLIMP_IDLE_TTL_S", defaults.idle_ttl_s),
                        help="drop a context unused this long, seconds (env GLIMP_IDLE_TTL_S)")
    parser.add_argument("--providers", default=env_str("GLIMP_PROVIDERS", defaults.providers),
                        help="ONNX Runtime providers: auto, or comma-separated cpu,cuda,tensorrt "
                        "(env GLIMP_PROVIDERS)")
    parser.add_argument("--intra-op-threads", type=int,
                        default=env_int("GLIMP_INTRA_OP_THREADS", defaults.intra_op_threads),
                        help="ONNX Runtime threads, 0: its default (env GLIMP_INTRA_OP_THREADS)")
    parser.add_argument("--repository", type=Path, default=env_path("GLIMP_REPOSITORY"),
                        help="write a self-contained model repository (a copy of the model) here and keep "
                        "it; default: a temporary one linking the model, removed at exit "
                        "(env GLIMP_REPOSITORY)")
    parser.add_argument("--build-only", action="store_true", default=env_flag("GLIMP_BUILD_ONLY"),
                        help="only write --repository and print the command for NVIDIA's Triton container "
                        "(env GLIMP_BUILD_ONLY)")
    parser.add_argument("--startup-timeout-s", type=float,
                        default=env_float("GLIMP_STARTUP_TIMEOUT_S", 300.0),
                        help="give up when not ready after this long (env GLIMP_STARTUP_TIMEOUT_S)")
    parser.add_argument("--log-file", type=Path, default=env_path("GLIMP_SERVER_LOG"),
                        help="keep the server's log here (env GLIMP_SERVER_LOG)")
    parser.add_argument("--check-period-s", type=float,
                        default=env_float("GLIMP_CHECK_PERIOD_S", SupervisorConfig.period_s),
                        help="run a real readiness inference this often and heal the server when it "
                        "fails (env GLIMP_CHECK_PERIOD_S)")
    _add_replica_flags(parser)


class _StopRequested(BaseException):
    """SIGINT/SIGTERM arrived: unwind whatever runs (even a startup wait) and stop the server."""


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.model_dir is None:
        raise BadInputError("give the LLM's folder: glimp serve MODEL_DIR (an ONNX export or a checkpoint)")
    engine = choose_engine(args.model_dir, args.engine)
    if engine.name == ONNX:
        check_role(args.model_dir, "llm", given_as="the model to serve",
                   fix="serve the LLM's folder (the SLM runs on the edge: glimp run --slm DIR)")
    settings = RepositorySettings(
        cache_budget_bytes=int(args.cache_budget_mb * _MIB), idle_ttl_s=args.idle_ttl_s,
        providers=args.providers, intra_op_threads=args.intra_op_threads, link_model=args.repository is None,
    )
    if engine.name == ONNX and args.speculative:
        raise BadInputError("--speculative is the vllm engine's (the onnx engine decodes one token a pass)")
    vllm_settings = _vllm_settings(args) if engine.name == VLLM else None
    if args.build_only:
        return _build_only(args, settings, vllm_settings)
    token = _token(args)
    check_ports_free(args.host, {"--grpc-port": args.grpc_port, "--metrics-port": args.metrics_port})
    tls = TLSFiles(args.tls_cert, args.tls_key) if args.tls_cert or args.tls_key else None
    if args.replicas != 1:
        if engine.name == VLLM:
            raise BadInputError("--replicas runs the onnx engine; the vllm engine batches every context "
                                "in one server: serve one per host (or per GPU) instead")
        return _serve_replicas(args, settings, token, tls)
    # The log outlives a failed server (the launcher's own would go with its work dir): a failure
    # names it. Removed after a clean stop unless the user asked for it with --log-file.
    log_file: Path = args.log_file or Path(tempfile.mkstemp(prefix="glimp_serve_", suffix=".log")[1])
    temp_repo = None if args.repository else Path(tempfile.mkdtemp(prefix="glimp_repo_"))
    repository_dir: Path = args.repository if temp_repo is None else temp_repo
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    server: TritonServer | None = None
    keep_log = False
    supervisor: Supervisor | None = None
    try:
        if vllm_settings is None:
            repository = build_repository(args.model_dir, repository_dir, settings, force=True)
        else:
            repository = vllm_repository.build_repository(args.model_dir, repository_dir, vllm_settings,
                                                          force=True)
        server = TritonServer(ServerConfig(
            repository=repository, grpc_port=args.grpc_port, metrics_port=args.metrics_port, host=args.host,
            token=token, tls=tls, tls_server_name=args.tls_server_name,
            startup_timeout_s=args.startup_timeout_s, log_file=log_file,
            python_bin=engine.python_bin, decoupled=engine.decoupled,
        ))
        _start(server, log_file)
        _print_ready(server, args, time.perf_counter() - started, token is not None, engine)
        supervisor = Supervisor(server, _supervision(args, engine)).start()
        supervisor.gave_up.wait()
        raise ServerStartError(f"tritonserver could not be healed (heals: {dict(supervisor.heals)}): "
                               f"{log_cause(log_file)}; full log: {log_file}")
    except _StopRequested:
        print("glimp serve: stopping", flush=True)
        return 0
    except ServerStartError:
        keep_log = True  # the message names it
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        if supervisor is not None:
            supervisor.stop()  # first: it must not heal the server being stopped
        if server is not None:
            server.stop()
        if temp_repo is not None:
            shutil.rmtree(temp_repo, ignore_errors=True)
        if not keep_log and args.log_file is None:
            log_file.unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _vllm_settings(args: argparse.Namespace) -> vllm_repository.VllmSettings:
    """The vLLM repository's settings from the flags; BadInputError naming the flag to fix."""
    template = unescaped(args.prompt_template)
    if template is None and not vllm_repository.has_chat_template(args.model_dir):
        raise BadInputError(
            f"{args.model_dir}'s tokenizer has no chat template, so the server cannot tell how a question "
            "becomes the prompt: pass --prompt-template with {question} in it (the toy pair's LLM: "
            "--prompt-template 'Q:{question}\\n')")
    try:
        return vllm_repository.VllmSettings(
            kv_cache_bytes=int(args.cache_budget_mb * _MIB), idle_ttl_s=args.idle_ttl_s,
            prompt_template=template or "{question}", step_delimiter=unescaped(args.step_delimiter) or "\n",
            link_model=args.repository is None, speculative=args.speculative,
            speculative_tokens=args.speculative_tokens)
    except ValueError as exc:
        raise BadInputError(f"{exc} (--cache-budget-mb, --prompt-template, --step-delimiter, "
                            "--speculative, --speculative-tokens)") from None


def _supervision(args: argparse.Namespace, engine: Engine) -> SupervisorConfig:
    if engine.name == VLLM:
        return SupervisorConfig(period_s=args.check_period_s, check_timeout_s=_VLLM_CHECK_TIMEOUT_S)
    return SupervisorConfig(period_s=args.check_period_s)


def _start(server: TritonServer, log_file: Path) -> None:
    """Start and check that the listener the readiness check reached is this server's.

    Raises ServerStartError in one line: what failed, the cause from the log, the log's path.
    """
    try:
        server.start()
    except ServerStartError as exc:
        what = str(exc).split(";", 1)[0]
        raise ServerStartError(f"{what}: {log_cause(log_file)}; full log: {log_file}") from None
    # The public port is the gateway's, which runs in this process (tritonserver itself listens
    # on a private socket): the listener the readiness check reached must be ours.
    if owns_listener(os.getpid(), server.config.grpc_port) is False:
        raise ServerStartError(
            f"another process answers on {server.grpc_url}, not the gateway of this glimp serve (pid "
            f"{os.getpid()}): stop it or choose another --grpc-port; full log: {log_file}"
        )


def log_cause(log_file: Path) -> str:
    """The line of a tritonserver log that says why it failed: its last error line, else its last line.

    Triton's errors are glog lines ("E1202 06:20:01.1 123 file.cc:10] failed to ..."): the
    prefix up to "] " is dropped.
    """
    try:
        lines = [line.strip() for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log was written"
    if not lines:
        return "the log is empty"
    glog_errors = [line for line in lines if _GLOG_PREFIX.match(line) and line[0] in "EF"]
    other_errors = [line for line in lines if not _GLOG_PREFIX.match(line) and "error" in line.lower()]
    line = (glog_errors or other_errors or lines)[-1]
    if _GLOG_PREFIX.match(line) and "] " in line:
        line = line.split("] ", 1)[1].strip('"')
    # Triton quotes a Python traceback into the line with escaped newlines: keep what precedes it.
    return one_line(line.split("\\n", 1)[0])


_GLOG_PREFIX = re.compile(r"^[EWIF]\d{4} ")
_CAUSE_CHARS = 400


def one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _CAUSE_CHARS else flat[: _CAUSE_CHARS - 1] + "\u2026"


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _StopRequested(signal.Signals(signum).name)


def _token(args: argparse.Namespace) -> str | None:
    token = read_token(args.token_file)
    if token is None and not args.insecure_no_token:
        raise BadInputError(
            f"no edge token: set {TOKEN_ENV} (or {TOKEN_FILE_ENV} / --token-file) to a shared secret the "
            "edges also get, or pass --insecure-no-token to serve without one (anyone who can reach "
            "the port could then use the model)"
        )
    if token is not None and args.insecure_no_token:
        raise BadInputError("both a token and --insecure-no-token were given; choose one")
    return token


def _print_ready(server: TritonServer, args: argparse.Namespace, ready_s: float, has_token: bool,
                 engine: Engine) -> None:
    auth = f"token required (metadata {GRPC_AUTH_METADATA_KEY})" if has_token else "NO TOKEN: open"
    tls = "TLS" if args.tls_cert else "plaintext"
    print(f"glimp serve: {MODEL_NAME} ready in {ready_s:.1f} s "
          f"(model {args.model_dir}, engine {engine.name})")
    print(f"  gRPC     {server.grpc_url}  ({tls}, {auth})")
    print(f"  metrics  {server.metrics_url}")
    kept = "" if args.log_file else "  (removed after a clean stop, kept after a failure)"
    print(f"  log      {server.log_path}{kept}")
    print(f"  shm      /dev/shm/{server.config.shm_prefix}*  (removed at exit)")
    print("Ctrl-C or SIGTERM stops it.", flush=True)


def _build_only(args: argparse.Namespace, settings: RepositorySettings,
                vllm_settings: vllm_repository.VllmSettings | None) -> int:
    if args.repository is None:
        raise BadInputError("--build-only needs --repository DIR (where to write the repository)")
    if vllm_settings is None:
        repository = build_repository(args.model_dir, args.repository, settings, force=True).resolve()
    else:
        repository = vllm_repository.build_repository(args.model_dir, args.repository, vllm_settings,
                                                      force=True).resolve()
    print(f"glimp serve: model repository written to {repository}")
    print("Run it in NVIDIA's Triton container (GPU host, token in $GLIMP_EDGE_TOKEN):")
    print(production_command(repository, args.grpc_port, args.metrics_port, vllm=vllm_settings is not None))
    return 0


def production_command(repository: Path, grpc_port: int = ServingConfig.grpc_port,
                       metrics_port: int = ServingConfig.metrics_port, *, vllm: bool = False) -> str:
    """The `docker run` line that serves the same repository with NVIDIA's Triton container.

    The container's Python gets this project: its base install for the onnx engine (ONNX Runtime
    and the contract; the container's tritonserver replaces nvidia-pytriton's), or for the vllm
    engine the project alone on the vLLM image, whose GPU vLLM and transformers it uses as they are
    (`--no-deps`: this project's CPU pins must not replace them). The source is mounted at /src;
    the tritonserver flags are `production_flags()`, the same object the launcher renders.
    """
    flags = " \\\n    ".join(production_flags().args())
    image, install = (VLLM_IMAGE, "pip install --no-cache-dir --no-deps /tmp/src") if vllm else \
        (PRODUCTION_IMAGE, "pip install --no-cache-dir /tmp/src")
    return (
        f"docker run --rm --gpus all --shm-size=2g -p {grpc_port}:8001 -p {metrics_port}:8002 \\\n"
        f"  -v {repository}:/models -v $PWD:/src:ro -v $PWD/certs:/certs:ro -e GLIMP_EDGE_TOKEN \\\n"
        f"  {image} bash -c 'cp -r /src /tmp/src && {install} && \\\n"
        f"  exec tritonserver {flags}'"
    )


def production_flags() -> TritonFlags:
    """tritonserver's flags inside the container: token from its environment, TLS from /certs."""
    return TritonFlags(
        model_repository="/models", admin_token=_CONTAINER_ADMIN_TOKEN, inference_token=_CONTAINER_TOKEN,
        tls_cert="/certs/server.crt", tls_key="/certs/server.key",
    )


# --- several replicas behind the nginx balancer (cloud_service.balancer) -------------------------

def _add_replica_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replicas", type=int, default=env_int("GLIMP_REPLICAS", 1),
                        help="serve N replicas behind an nginx balancer on --grpc-port, each context "
                        "kept on one replica (needs nginx: apt-get install nginx-light) (env GLIMP_REPLICAS)")
    parser.add_argument("--balance", choices=POLICIES, default=env_str("GLIMP_BALANCE", AFFINITY),
                        help="with --replicas: affinity (consistent hash on the context header) or "
                        "round_robin (a baseline: contexts scatter) (env GLIMP_BALANCE)")


def _serve_replicas(args: argparse.Namespace, settings: RepositorySettings, token: str | None,
                    tls: TLSFiles | None) -> int:
    if not 2 <= args.replicas <= MAX_REPLICAS:
        raise BadInputError(f"--replicas must be between 1 and {MAX_REPLICAS}, got {args.replicas}")
    if args.repository is not None or args.log_file is not None:
        raise BadInputError("--replicas builds one repository and log per replica; drop --repository "
                            "and --log-file (the logs are printed)")
    if args.balance not in POLICIES:
        raise BadInputError(f"--balance must be one of {POLICIES}, got {args.balance!r}")
    work_dir = fleet_work_dir()
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    fleet = None
    try:
        fleet = start_fleet(args, replace(settings, link_model=True), token, tls, work_dir)
        return _watch_fleet(fleet)
    except _StopRequested:
        print("glimp serve: stopping", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if fleet is not None:
            fleet.stop()
        shutil.rmtree(work_dir, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _watch_fleet(fleet: LocalFleet) -> int:
    """Report replicas that exit (the balancer routes around them); end when none or nginx is left."""
    reported: set[int] = set()
    while fleet.balancer is not None and fleet.balancer.is_running():
        for i, server in enumerate(fleet.replicas):
            if not server.is_running() and i not in reported:
                reported.add(i)
                print(f"glimp serve: replica {i} ({server.grpc_url}) exited; its contexts move to the "
                      f"others. Log ends:\n{server.log_tail(10)}", flush=True)
        if len(reported) == len(fleet.replicas):
            print("glimp serve: every replica exited", flush=True)
            return 1
        time.sleep(0.5)
    print("glimp serve: the balancer (nginx) exited by itself", flush=True)
    return 1
