"""Exceptions raised by nnbackend."""

from __future__ import annotations


class BackendUnavailableError(RuntimeError):
    """A requested backend (or device) cannot be used on this machine; the message says why."""


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with its central finite-difference estimate."""


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, malformed, or does not fit the model or optimizer.

    The message names the file and the cause (a truncated or corrupt archive, a format version
    this nnbackend cannot read, a parameter whose name, shape or dtype differs, ...).
    """
