"""An OpenAI-compatible chat endpoint on the device: apps call `POST /v1/chat/completions` unchanged.

`glimp api --slm DIR --llm-url HOST:PORT` serves it (edge_client.api.command). The reasoning
comes back as `reasoning_content` and the answer as `content` (as vLLM's reasoning parsers and
DeepSeek's API return them); `usage.glimp` carries the edge/cloud split and the cost
(edge_client.api.usage documents its fields).

Modules: `settings` (the server's frozen settings), `schema` (the request and its validation),
`errors` (OpenAI-style error bodies), `engine` (one SLM worker, jobs, cancellation), `metering`
(the LLM seen by the engine: cancel checks, per-call metrics), `streaming` (events to chunks),
`usage` (the usage object), `metrics` (Prometheus), `app` (routes), `server` (uvicorn in a
thread), `command` (`glimp api`). This package imports FastAPI, so nothing else in edge_client
imports it: an edge install without the `api` extra still answers questions.
"""
