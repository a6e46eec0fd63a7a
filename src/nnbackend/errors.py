"""Exceptions raised by nnbackend."""

from __future__ import annotations


class BackendUnavailableError(RuntimeError):
    """A requested backend (or device) cannot be used on this machine; the message says why."""


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with its central finite-difference estimate."""
