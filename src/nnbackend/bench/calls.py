"""Counting the array calls of one benchmark step: :func:`count_calls`."""

from __future__ import annotations

import importlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import get_backend
from .convspecs import ConvSpec
from .convworkloads import build_conv_workload
from .counting import CountingNamespace
from .seqspecs import SeqSpec
from .seqworkloads import build_seq_workload
from .specs import MLPSpec
from .workloads import Target, Workload, build_workload

__all__ = ["CallCount", "count_calls"]

_Spec = MLPSpec | ConvSpec | SeqSpec


@dataclass(frozen=True)
class CallCount:
    """Calls in one step: the total, by name, and what was counted (``unit``)."""

    total: int
    by_name: dict[str, int]
    unit: str


def count_calls(target: Target, spec: _Spec, workload: str, *,
                batch: int | None = None, seed: int = 0) -> CallCount | None:
    """Count the calls of one step of ``workload`` (after two warm-up steps).

    nnbackend: calls through its Array API namespace and operators on its arrays (unit
    ``"array-api"``); floor: calls through ``numpy`` and operators on its arrays (``"numpy"``);
    both with :class:`CountingNamespace`. torch: ATen operators dispatched, the autograd
    backward included (``"aten"``).

    Returns None, without running anything, for nnbackend on other libraries than NumPy (CuPy,
    and the GPU-like test device, which takes CuPy's paths: the library's native fast paths
    pass the arrays to CuPy's own functions, which accept CuPy arrays only, not the counting
    proxies; PyTorch and JAX likewise) and for the convolutional floor (it calls NumPy on its
    own buffers, not through a namespace); the sequence layers have no floor. None for the
    compiled targets too: their step is one program call (its operations run inside XLA or a
    CUDA graph, where no namespace sees them).
    """
    if target.compiled:
        return None
    if target.impl == "torch":
        return _count_torch(target, spec, workload, batch=batch, seed=seed)
    if target.impl == "nnbackend" and target.backend != "numpy":
        return None
    if target.impl == "floor" and not isinstance(spec, MLPSpec):
        return None
    if target.impl == "nnbackend":
        namespace = CountingNamespace(get_backend(target.backend).xp)
        unit = "array-api"
    else:
        namespace = CountingNamespace(np)
        unit = "numpy"
    wl = _build(target, spec, workload, batch=batch, seed=seed, namespace=namespace)
    wl()
    wl()
    namespace.reset()
    wl()
    return CallCount(namespace.calls, dict(sorted(namespace.counts.items())), unit)


def _build(target: Target, spec: _Spec, workload: str, *, batch: int | None,
           seed: int, namespace: CountingNamespace | None = None) -> Workload:
    """The workload of an MLP, a convolutional network or a sequence layer."""
    if isinstance(spec, SeqSpec):
        return build_seq_workload(target, spec, workload, batch=batch, seed=seed,
                                  namespace=namespace)
    if isinstance(spec, ConvSpec):
        return build_conv_workload(target, spec, workload, batch=batch, seed=seed,
                                   namespace=namespace)
    return build_workload(target, spec, workload, batch=batch, seed=seed, namespace=namespace)


def _count_torch(target: Target, spec: _Spec, workload: str, *, batch: int | None,
                 seed: int) -> CallCount:
    """ATen operators of one torch step, through a TorchDispatchMode."""
    dispatch_mode: Any = importlib.import_module("torch.utils._python_dispatch").TorchDispatchMode
    counts: Counter[str] = Counter()

    class _Counting(dispatch_mode):  # type: ignore[misc]
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                               kwargs: Any = None) -> Any:
            name = str(func)
            if not name.startswith("profiler."):
                counts[name] += 1
            return func(*args, **(kwargs or {}))

    wl = _build(target, spec, workload, batch=batch, seed=seed)
    wl()
    wl()
    with _Counting():
        wl()
    return CallCount(sum(counts.values()), dict(sorted(counts.items())), "aten")
