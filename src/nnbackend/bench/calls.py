"""Counting the array calls of one benchmark step: :func:`count_calls`."""

from __future__ import annotations

import importlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import get_backend
from .counting import CountingNamespace
from .specs import MLPSpec
from .workloads import Target, build_workload

__all__ = ["CallCount", "count_calls"]


@dataclass(frozen=True)
class CallCount:
    """Calls in one step: the total, by name, and what was counted (``unit``)."""

    total: int
    by_name: dict[str, int]
    unit: str


def count_calls(target: Target, spec: MLPSpec, workload: str, *, batch: int | None = None,
                seed: int = 0) -> CallCount | None:
    """Count the calls of one step of ``workload`` (after two warm-up steps).

    nnbackend: calls through its Array API namespace and operators on its arrays (unit
    ``"array-api"``); floor: calls through ``numpy`` and operators on its arrays (``"numpy"``);
    both with :class:`CountingNamespace`. torch: ATen operators dispatched, the autograd
    backward included (``"aten"``).

    Returns None for nnbackend on CuPy (and on the GPU-like test device, which takes CuPy's
    paths), without running it: the library's native fast paths pass the arrays to CuPy's own
    functions, which (unlike NumPy's) accept CuPy arrays only, not the counting proxies.
    """
    if target.impl == "torch":
        return _count_torch(target, spec, workload, batch=batch, seed=seed)
    if target.impl == "nnbackend" and target.backend in ("cupy", "gpulike"):
        return None
    if target.impl == "nnbackend":
        namespace = CountingNamespace(get_backend(target.backend).xp)
        unit = "array-api"
    else:
        namespace = CountingNamespace(np)
        unit = "numpy"
    wl = build_workload(target, spec, workload, batch=batch, seed=seed, namespace=namespace)
    wl()
    wl()
    namespace.reset()
    wl()
    return CallCount(namespace.calls, dict(sorted(namespace.counts.items())), unit)


def _count_torch(target: Target, spec: MLPSpec, workload: str, *, batch: int | None,
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

    wl = build_workload(target, spec, workload, batch=batch, seed=seed)
    wl()
    wl()
    with _Counting():
        wl()
    return CallCount(sum(counts.values()), dict(sorted(counts.items())), "aten")
