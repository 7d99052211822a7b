"""Benchmarks: `e2e` (the routing systems end to end over an emulated link) and `decode` (batch-1
decode speed and the GPU checks). Recorded runs are under `bench/results/`."""
