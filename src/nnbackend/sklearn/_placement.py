"""Where an estimator computes, and where its inputs and outputs live.

scikit-learn's convention, kept here: without Array API dispatch every input is converted to
NumPy and every output is NumPy. With ``sklearn.config_context(array_api_dispatch=True)``, an
input array of another namespace (PyTorch, CuPy, array-api-strict, ...) stays in its namespace
and on its device, and so do the outputs.

The ``backend`` parameter of the estimators chooses where the training math runs:

========================  ===================================================================
``backend``               computes on
========================  ===================================================================
None (default)            the input's namespace and device under Array API dispatch (an
                          input that is not a NumPy array); NumPy otherwise
a name or a ``Backend``   that backend (:func:`nnbackend.get_backend`: ``"cupy"``,
                          ``"torch:cuda:0"``, ``"gpulike:0"``, ...); host inputs are
                          transferred once per call, outputs come back where the input was
========================  ===================================================================

A fitted estimator remembers the backend it trained on as a picklable description (its name
and device), never the live :class:`~nnbackend.Backend` (which holds a module).
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
from sklearn import get_config

from .._typing import Array
from ..backend import Backend, backend_of, get_backend, to_numpy

__all__ = [
    "BackendSpec",
    "describe",
    "input_backend",
    "is_host",
    "output_to",
    "resolve",
    "to_host",
]

BackendSpec = tuple[str, Any]
"""A picklable description of a backend: ``(name, device)``; ``device`` is a picklable device
object (``torch.device``, ``array_api_strict.Device``) or a string/int naming one."""

_NUMPY: BackendSpec = ("numpy", None)


def is_host(x: Any) -> bool:
    """Whether ``x`` is host data for scikit-learn: a NumPy array, or anything that is not an
    array of an Array API namespace (lists, DataFrames, scalars)."""
    if isinstance(x, np.ndarray):
        return True
    return not hasattr(x, "__array_namespace__") and type(x).__module__.split(".")[0] not in (
        "torch", "cupy", "jax", "jaxlib", "array_api_strict")


def input_backend(x: Any) -> Backend | None:
    """The backend of an input that keeps its namespace under Array API dispatch, else None.

    With dispatch off, or for host data, scikit-learn converts to NumPy: None.
    """
    if not get_config()["array_api_dispatch"] or is_host(x):
        return None
    return backend_of(x)


def describe(backend: Backend) -> BackendSpec:
    """``(name, device)``: enough to find ``backend`` again after pickling, not the module."""
    name = backend.name
    dev = backend.device
    if name == "numpy":
        return _NUMPY
    if name in ("gpulike", "cupy"):
        return (name, int(dev.id))
    if name == "torch":
        return (name, str(dev))
    try:
        pickle.dumps(dev)
    except Exception:  # a device that does not pickle: its text
        return (name, str(dev))
    return (name, dev)


def resolve(spec: BackendSpec) -> Backend:
    """The :class:`~nnbackend.Backend` a :func:`describe` description names."""
    name, dev = spec
    if name == "numpy":
        return get_backend("numpy")
    if name in ("gpulike", "cupy"):
        return get_backend(f"{name}:{dev}")
    return get_backend(name, device=dev)


def to_host(x: Any) -> Any:
    """A non-NumPy array as a host NumPy array (an explicit transfer); other data unchanged."""
    if is_host(x):
        return x
    return np.array(to_numpy(x), copy=True)


def output_to(y: Array, computed_on: Backend, target: Backend | None) -> Any:
    """An output computed on ``computed_on`` delivered where the input lived: on ``target``
    (an input kept in its namespace by Array API dispatch), or as a host NumPy array."""
    if target is None:
        if computed_on.name == "numpy":
            return y
        return np.array(to_numpy(y), copy=True)
    if target.holds(y):
        return y
    return target.asarray(to_numpy(y))
