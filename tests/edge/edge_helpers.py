"""Helpers of the edge tests: a CPU session config; model edits shared with other roles re-exported.

A "forced" model (`force_token`, in tests/model_edits.py) lets a test reach each way thinking
ends (think_end, EOS, a repeat, the budget, a full context) deterministically.
"""

from __future__ import annotations

from model_edits import FORCE_LOGIT, force_token, reorder_vocabulary, set_manifest

from onnx_lm import SessionConfig

__all__ = ["CPU", "FORCE_LOGIT", "force_token", "reorder_vocabulary", "set_manifest"]

CPU = SessionConfig(providers="cpu", intra_op_threads=1)
