"""Which array library a namespace is, and what it can do: the one place that identifies them.

The math never asks for a library by name. Where a code path depends on what a library can do
(flat parameter buffers need mutable views; the native fast paths need NumPy-style ``out=``
spellings; a host copy needs the library's own route off its device), it asks this module for
the :class:`Library` of a namespace and reads the capability. A namespace this module does not
know gets the conservative answer (no views, no native spellings, DLPack to the host), unless it
declares its own :class:`Library` as ``__nnbackend_library__`` (the GPU-like test device in
:mod:`nnbackend.testing` does, so it takes CuPy's code paths on a CPU).
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from ._typing import Namespace

__all__ = [
    "Library",
    "is_host_array",
    "is_traced",
    "library_of",
    "to_host",
    "type_decides_namespace",
]


@dataclass(frozen=True)
class Library:
    """What nnbackend needs to know about the library behind an Array API namespace.

    Attributes
    ----------
    name : str
        ``"numpy"``, ``"cupy"``, ``"torch"``, ``"array_api_strict"``, ``"jax"``, ``"gpulike"``,
        or the module name of another namespace.
    mutable_views : bool
        Arrays are mutable in place and a reshaped basic slice of a contiguous array is a view
        (writes through it reach the base): optimizers may pack parameters into flat buffers.
        True for NumPy, CuPy, PyTorch and the GPU-like test device; False for array-api-strict
        (the standard promises no views) and JAX (immutable arrays).
    native : module or None
        The module whose NumPy-style spellings the fast paths in ``_native`` call (``out=`` for
        ``matmul`` and ``sum``, bool × float products); None where only the standard applies.
    to_host : callable
        The library's explicit copy of one of its arrays to a host NumPy array.
    in_host_memory : callable
        Whether one of its arrays lives in host memory, so reading it costs no device
        synchronisation (NumPy, array-api-strict, PyTorch on the CPU).
    records_autograd : bool
        Its arrays may carry an autograd graph (PyTorch), which nnbackend refuses.
    """

    name: str
    mutable_views: bool = False
    native: ModuleType | None = None
    to_host: Callable[[Any], np.ndarray] = np.from_dlpack
    in_host_memory: Callable[[Any], bool] = lambda x: False
    records_autograd: bool = False


def _cupy_to_host(x: Any) -> np.ndarray:
    return x.get()  # type: ignore[no-any-return]


def _torch_to_host(x: Any) -> np.ndarray:
    try:
        return x.detach().cpu().resolve_conj().numpy()  # type: ignore[no-any-return]
    except TypeError as exc:  # bfloat16, float8, ...: types NumPy has no dtype for
        msg = (
            f"a PyTorch tensor of dtype {x.dtype} has no NumPy equivalent ({exc}); convert it "
            "first, e.g. tensor.float() for float32"
        )
        raise TypeError(msg) from None


def _strict_to_host(x: Any) -> np.ndarray:
    strict = array_api_compat.array_namespace(x)
    return np.asarray(x.to_device(strict.Device("CPU_DEVICE")))


@functools.cache
def library_of(xp: Namespace) -> Library:
    """The :class:`Library` behind namespace ``xp`` (cached: one dictionary lookup a call)."""
    declared = getattr(xp, "__nnbackend_library__", None)
    if isinstance(declared, Library):
        return declared
    if array_api_compat.is_numpy_namespace(xp):
        return Library("numpy", mutable_views=True, native=np, to_host=np.asarray,
                       in_host_memory=_always)
    if array_api_compat.is_cupy_namespace(xp):
        cupy = importlib.import_module("cupy")
        return Library("cupy", mutable_views=True, native=cupy, to_host=_cupy_to_host)
    if array_api_compat.is_torch_namespace(xp):
        torch = importlib.import_module("torch")
        return Library("torch", mutable_views=True, native=torch, to_host=_torch_to_host,
                       in_host_memory=_torch_on_cpu, records_autograd=True)
    if array_api_compat.is_array_api_strict_namespace(xp):
        return Library("array_api_strict", to_host=_strict_to_host, in_host_memory=_always)
    if array_api_compat.is_jax_namespace(xp):
        return Library("jax", to_host=np.asarray)
    return Library(getattr(xp, "__name__", type(xp).__name__))


def _always(x: Any) -> bool:
    return True


def _torch_on_cpu(x: Any) -> bool:
    return bool(x.device.type == "cpu")


def type_decides_namespace(x: object, xp: Namespace) -> bool:
    """Whether every array of ``type(x)`` has namespace ``xp`` (so the namespace may be cached
    by type): the arrays of NumPy, CuPy, PyTorch, array-api-strict and of namespaces that
    declare their library (the GPU-like test device), but not proxies that wrap them (the
    benchmark's counting arrays, whose namespace only borrows the wrapped one's name)."""
    return bool(
        array_api_compat.is_numpy_array(x)
        or array_api_compat.is_cupy_array(x)
        or array_api_compat.is_torch_array(x)
        or type(x).__module__.startswith("array_api_strict")
        or (hasattr(xp, "__nnbackend_library__") and type(x).__module__ == xp.__name__)
    )


def is_traced(x: Any) -> bool:
    """Whether ``x`` is an abstract value of a ``jax.jit`` trace (a ``jax.core.Tracer``).

    A value computed from one inside a trace belongs to that trace alone: a cache that kept it
    would hand a dead tracer to the next trace (an ``UnexpectedTracerError``) or bake one
    trace's value into another. Caches of arrays skip such values. False without JAX imported
    (nothing can be traced then), at the cost of one dictionary lookup.
    """
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(x, jax.core.Tracer)


def is_host_array(x: Any) -> bool:
    """True when reading ``x`` on the host costs no device synchronisation (CPU memory)."""
    if isinstance(x, np.ndarray):
        return True
    if not array_api_compat.is_array_api_obj(x):
        return False
    return library_of(array_api_compat.array_namespace(x)).in_host_memory(x)


def to_host(x: Any) -> np.ndarray:
    """A host NumPy array with the values of ``x``, an array of any namespace (synchronises).

    NumPy arrays come back as they are (no copy); everything else through its library's own
    explicit route (``.get()`` on CuPy, ``.cpu().numpy()`` on PyTorch, DLPack otherwise).
    """
    if isinstance(x, np.ndarray | np.generic):
        return np.asarray(x)
    if not array_api_compat.is_array_api_obj(x):
        return np.asarray(x)
    return library_of(array_api_compat.array_namespace(x)).to_host(x)
