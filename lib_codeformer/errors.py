"""The errors a user can act on, shared by every layer (imports nothing, so any module may raise them).

Each message says what is wrong and what to do; front ends show it as it is,
without a traceback.
"""

from __future__ import annotations


class SetupError(RuntimeError):
    """Something about the installation is missing or broken (weights, packages); retrying cannot help."""


class WeightsError(SetupError):
    """Model weights are missing, unreadable, unsafe, or of another network."""


class DownloadError(WeightsError):
    """A model file could not be downloaded or failed verification."""


class MissingDependency(SetupError):
    """A package the pipeline needs is not installed; the message says how to install it."""
