"""`glimp api`: serve the router as an OpenAI-compatible chat endpoint on this device.

    glimp api --slm models/toy-pair/slm --llm-url HOST:PORT [--port 8080]
    glimp api --slm models/toy-pair/slm --llm-local models/toy-pair/llm

Bound to 127.0.0.1 unless --host says otherwise. The API key is read from --api-key-file (or
GLIMP_API_KEY), never from the command line, where other users of the machine could read it.
Every flag of `glimp run` that picks the models, the link and the routing applies here too, with
the same environment twins; the sampling flags are the defaults a request may override.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

from edge_client import run_command
from edge_client.config import RouterConfig
from glimp_common.env import env_flag, env_float, env_int, env_str
from glimp_common.errors import BadInputError
from onnx_lm import SessionConfig


def configure_parser(parser: argparse.ArgumentParser) -> None:
    # The endpoint's own --offline-ok (below) decides both whether an unreachable cloud stops a
    # request and whether a degraded answer is a 503.
    run_command.add_router_flags(parser, offline_ok=False)
    run_command.add_price_flags(parser)
    api = parser.add_argument_group("the endpoint")
    api.add_argument("--host", default=env_str("GLIMP_API_HOST", "127.0.0.1"),
                     help="address to listen on; 0.0.0.0 exposes it to the network (env GLIMP_API_HOST)")
    api.add_argument("--port", type=int, default=env_int("GLIMP_API_PORT", 8080),
                     help="TCP port (env GLIMP_API_PORT)")
    api.add_argument("--api-key-file", default=env_str("GLIMP_API_KEY_FILE"),
                     help="file holding the key clients must send as 'Bearer <key>' (env GLIMP_API_KEY_FILE; "
                          "or the key itself in GLIMP_API_KEY); none: no key asked")
    api.add_argument("--model-name", default=env_str("GLIMP_API_MODEL", "glimprouter"),
                     help="the model id clients name (env GLIMP_API_MODEL)")
    api.add_argument("--offline-ok", action=argparse.BooleanOptionalAction,
                     default=env_flag("GLIMP_API_OFFLINE_OK", True),
                     help="when the cloud is down, answer with the SLM alone (flagged degraded) instead of "
                          "503; a request's offline_ok overrides it (env GLIMP_API_OFFLINE_OK)")
    api.add_argument("--max-conversations", type=int, default=env_int("GLIMP_API_MAX_CONVERSATIONS", 4),
                     help="conversations whose SLM context is held for their next turn; 0 holds none "
                          "(env GLIMP_API_MAX_CONVERSATIONS)")
    api.add_argument("--conversation-idle-s", type=float,
                     default=env_float("GLIMP_API_CONVERSATION_IDLE_S", 300.0),
                     help="a held conversation unused this long is dropped, seconds "
                          "(env GLIMP_API_CONVERSATION_IDLE_S)")


def api_key(args: argparse.Namespace) -> str | None:
    if args.api_key_file:
        path = Path(args.api_key_file)
        if not path.is_file():
            raise BadInputError(f"API key file {path} does not exist")
        key = path.read_text(encoding="utf-8").strip()
        if not key:
            raise BadInputError(f"API key file {path} is empty")
        return key
    return os.environ.get("GLIMP_API_KEY") or None


def _check(args: argparse.Namespace, config: RouterConfig) -> None:
    run_command.check_models(args, config)
    if args.max_conversations < 0 or args.conversation_idle_s <= 0:
        raise BadInputError("--max-conversations must be >= 0 and --conversation-idle-s > 0")
    if not 0 <= args.port <= 65535:
        raise BadInputError(f"--port must be 0..65535, got {args.port}")


def run(args: argparse.Namespace) -> int:
    from edge_client.api.app import create_app
    from edge_client.api.engine import Engine
    from edge_client.api.metrics import ApiMetrics
    from edge_client.api.server import bind_listener, uvicorn_server
    from edge_client.api.settings import ApiSettings
    from onnx_lm import CausalLM

    config = run_command.router_config(args)
    _check(args, config)
    settings = ApiSettings(model_id=args.model_name, api_key=api_key(args), prices=run_command.prices(args),
                           offline_ok=args.offline_ok)
    with contextlib.closing(bind_listener(args.host, args.port)) as listener:
        session = SessionConfig(providers=args.providers, spin_wait=args.spin_wait)
        llm = run_command.llm_backend(args, session) if config.needs_llm else None
        engine = Engine(CausalLM.load(args.slm, session), llm, config, ApiMetrics(),
                        max_conversations=args.max_conversations,
                        conversation_idle_s=args.conversation_idle_s)
        try:
            port = listener.getsockname()[1]  # the one the OS picked for --port 0
            print(f"glimp api: serving {settings.model_id!r} on http://{args.host}:{port}/v1 "
                  f"(cloud: {engine.cloud})", flush=True)
            uvicorn_server(create_app(engine, settings), args.host, port).run(sockets=[listener])
        finally:
            engine.close()
            if llm is not None:
                llm.close()
    return 0
