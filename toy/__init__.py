"""The toy reasoning pair: a synthetic arithmetic task, a trainer, export and evaluation.

No model hub is reachable, so the project trains its own small/large pair of clearly different
skill on a task whose first-token entropy carries signal. See `models/toy-pair/README.md`.
"""
