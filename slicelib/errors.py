"""The errors slicelib raises at its users, in one place at the bottom of the package.

Every message names the file, table row or value that is wrong and says what to do. Each is a
subclass of a built-in exception, so ``except ValueError`` still catches bad input.
"""

from __future__ import annotations

__all__ = ["DataError", "PipelineError", "ConfigError", "CheckpointError", "WeightsError"]


class DataError(ValueError):
    """Bad input data: the message names the file or table row, what is wrong and what to do."""


class PipelineError(ValueError):
    """A scan the pipeline cannot process; the message names the file and the reason."""


class ConfigError(ValueError):
    """A configuration is invalid (unknown key, bad value, resume with another config)."""


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used (missing, from another architecture, unreadable)."""


class WeightsError(RuntimeError):
    """Pretrained weights could not be found, downloaded or loaded."""
