"""The engines behind the one `glimp_llm` Triton model: each turns a StepRequest into a StepReply.

- `onnx`: an exported ONNX folder under ONNX Runtime, one step at a time, with its own
  per-context KV cache (`context_store`: LRU + idle TTL within a byte budget). Small clouds,
  CPU-only clouds and fast fault tests.

Whatever the engine, the server owns each context (owner-scoped id, committed text, digest,
typed mismatch) and commits only when a call succeeds (protos/edge_cloud_v1.proto).
"""
