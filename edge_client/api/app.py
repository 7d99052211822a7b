"""The routes: `POST /v1/chat/completions`, `GET /v1/models`, `/health`, `/metrics`.

`/v1/*` asks for `Authorization: Bearer <key>` when the server has a key; `/health` and
`/metrics` do not (a load balancer's probe and a Prometheus scrape on the device), and say
nothing a client could not learn from the model list.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException

from edge_client.api.completion import Completion
from edge_client.api.engine import Engine, Finished, Job
from edge_client.api.errors import ApiError, GenerationCancelled, api_error, bad_request
from edge_client.api.metrics import CONTENT_TYPE
from edge_client.api.schema import ChatRequest, parse_request
from edge_client.api.settings import ApiSettings
from edge_client.api.sse import stream_run
from edge_client.errors import CloudError
from glimp_common.errors import BadInputError

log = logging.getLogger(__name__)

_DISCONNECT_POLL_S = 0.25  # how often a waiting non-streamed request checks that its client is there


def create_app(engine: Engine, settings: ApiSettings) -> FastAPI:
    """The ASGI app serving `engine` under `settings`."""
    app = FastAPI(title="GlimpRouter", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.settings = engine, settings
    _add_error_handlers(app)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": settings.model_id, "cloud": engine.cloud}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(engine.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        _authorize(request, settings)
        model = {"id": settings.model_id, "object": "model", "created": 0, "owned_by": "glimprouter"}
        return {"object": "list", "data": [model]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Response | EventSourceResponse:
        _authorize(request, settings)
        chat = await _chat_request(request, engine, settings)
        offline_ok = settings.offline_ok if chat.offline_ok is None else chat.offline_ok
        job = Job(chat.messages, chat.steps, offline_ok, chat.stop)
        completion = Completion(chat, settings)
        if chat.stream:
            return EventSourceResponse(stream_run(engine, completion, job), ping=15)
        finished = await _wait(request, engine, job)
        engine.metrics.record_run(finished.result, finished.prompt_tokens, settings.prices)
        engine.metrics.requests.labels("ok").inc()
        return JSONResponse(completion.whole(finished, engine.delimiter, engine.think_end))

    return app


def _authorize(request: Request, settings: ApiSettings) -> None:
    if settings.api_key is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, key = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), settings.api_key.encode()):
        raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>' with the "
                       "server's key",
                       "invalid_request_error", None, "invalid_api_key")


async def _chat_request(request: Request, engine: Engine, settings: ApiSettings) -> ChatRequest:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"the body is not JSON: {exc}", None, "invalid_json") from None
    chat = parse_request(body, engine.config.steps)
    if chat.model != settings.model_id:
        raise ApiError(404, f"the model {chat.model!r} does not exist here; this server serves "
                       f"{settings.model_id!r} (GET /v1/models)", "invalid_request_error", "model",
                       "model_not_found")
    try:
        engine.prompt_tokens(chat.messages)
    except BadInputError as exc:
        raise bad_request(str(exc), "messages", "context_length_exceeded") from None
    return chat


async def _wait(request: Request, engine: Engine, job: Job) -> Finished:
    """The run's result; a client that disconnects while it waits cancels the run."""
    future = asyncio.wrap_future(engine.submit(job))
    try:
        while True:
            done, _ = await asyncio.wait({future}, timeout=_DISCONNECT_POLL_S)
            if done:
                return future.result()
            if await request.is_disconnected():
                job.cancel.set()
    except Exception:
        if not job.cancel.is_set():
            engine.metrics.requests.labels("error").inc()
        raise


def _add_error_handlers(app: FastAPI) -> None:
    async def on_error(_request: Request, exc: Exception) -> JSONResponse:
        error = api_error(exc)
        if error.status >= 500 and not isinstance(exc, ApiError):
            log.exception("request failed", exc_info=exc)
        return JSONResponse(error.body(), status_code=error.status)

    async def on_http(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = "not_found" if exc.status_code == 404 else None
        error = ApiError(exc.status_code, str(exc.detail), "invalid_request_error", None, code)
        return JSONResponse(error.body(), status_code=exc.status_code)

    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_error)
    for kind in (ApiError, BadInputError, GenerationCancelled, CloudError):
        app.add_exception_handler(kind, on_error)
