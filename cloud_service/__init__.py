"""The cloud half: the LLM on Triton's python backend, with a per-context KV cache.

`engine` holds the logic (testable without Triton), `triton_model/` the model folder,
`repository` and `launcher` build and run a real tritonserver, `commands` is `glimp serve`.
Imports `onnx_lm` and `protos` only, never `edge_client`.
"""
