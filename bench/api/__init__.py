"""Figures of the OpenAI-compatible endpoint (issue 14): multi-turn reuse, latency, throughput."""
