"""Sampling cost at a 152k vocabulary (bench.sampling.speed)."""
