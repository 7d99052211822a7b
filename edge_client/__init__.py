"""Device runtime: the ONNX SLM, the GlimpRouter step loop, routing policies, the cloud link."""
