"""The project's one exception root and the errors every layer shares (bottom package: stdlib only).

Each subclass carries a message that says what was wrong and what to do about it.
"""

from __future__ import annotations


class GlimpError(Exception):
    """Root of every error this project raises on purpose."""


class BadInputError(GlimpError, ValueError):
    """An argument or a file given by the user is not acceptable."""


class ModelContractError(GlimpError):
    """A model folder does not fit what the runtime needs (files, ONNX inputs/outputs, manifest)."""


class ProviderError(GlimpError):
    """No requested ONNX Runtime execution provider could run the model."""
