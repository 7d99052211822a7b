"""Moved to `glimp_common.errors` (the bottom package every role imports); re-exported here."""

from glimp_common.errors import *  # noqa: F403
from glimp_common.errors import BadInputError, GlimpError, ModelContractError, ProviderError

__all__ = ["BadInputError", "GlimpError", "ModelContractError", "ProviderError"]
