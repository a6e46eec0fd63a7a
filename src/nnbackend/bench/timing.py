"""Timing a step, and the machine it ran on: :func:`measure`, :func:`thread_info`,
:func:`machine_info` (see :mod:`nnbackend.bench` for how a step is timed)."""

from __future__ import annotations

import importlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import array_api_compat
import numpy as np

from .. import __version__
from ..backend import get_backend

__all__ = [
    "OPENBLAS_ENV",
    "Timing",
    "blas_kernel",
    "machine_info",
    "measure",
    "measure_interleaved",
    "openblas_env",
    "thread_info",
    "without_openblas_env",
]


def _no_sync() -> None:
    """Nothing to wait for (CPU targets)."""


@dataclass(frozen=True)
class Timing:
    """Result of :func:`measure`.

    Attributes
    ----------
    seconds : float
        Time per step: the minimum over repeats of the median block time per step.
    median_seconds : float
        The median over all blocks (for a sense of spread).
    steps : int
        Timed steps, warm-up excluded.
    """

    seconds: float
    median_seconds: float
    steps: int


def measure(step: Callable[[], object], *, sync: Callable[[], None] = _no_sync,
            budget_s: float = 0.3, repeats: int = 5, block_s: float = 0.002) -> Timing:
    """Time ``step`` with ``time.perf_counter`` (see :mod:`nnbackend.bench`).

    Parameters
    ----------
    step : callable
        One step; may return before the device finishes.
    sync : callable
        Waits for the device; called before each block's clock stops.
    budget_s : float
        Roughly the seconds to spend timing (warm-up excluded, at least one block per repeat).
    repeats : int
        Number of repeats; the result is the fastest repeat's median block.
    block_s : float
        Target duration of a timed block of consecutive steps.
    """
    if budget_s <= 0 or repeats < 1:
        msg = f"measure: budget_s must be positive and repeats ≥ 1, got {budget_s}, {repeats}"
        raise ValueError(msg)
    start, calls = time.perf_counter(), 0
    while calls < 2 or (time.perf_counter() - start < 0.1 * budget_s and calls < 10_000):
        step()
        calls += 1
    sync()
    per_step = max((time.perf_counter() - start) / calls, 1e-9)
    block = max(1, round(block_s / per_step))
    blocks = max(1, round(budget_s / (repeats * block * per_step)))
    clock = time.perf_counter
    medians: list[float] = []
    everything: list[float] = []
    for _ in range(repeats):
        times = []
        for _ in range(blocks):
            t0 = clock()
            for _ in range(block):
                step()
            sync()
            times.append((clock() - t0) / block)
        medians.append(statistics.median(times))
        everything.extend(times)
    return Timing(min(medians), statistics.median(everything), repeats * blocks * block)


def measure_interleaved(steps: Sequence[tuple[Callable[[], object], Callable[[], None]]], *,
                        budget_s: float = 1.0, rounds: int = 3,
                        repeats: int = 5) -> list[Timing]:
    """Time several ``(step, sync)`` pairs in turns: ``rounds`` rounds, each measuring every
    step with :func:`measure` for ``budget_s / (rounds · len(steps))`` seconds in a row.

    A burst of work elsewhere on a shared machine then falls on one round of each step, not on
    all of one step's measurement. The turns are long on purpose: OpenBLAS's and OpenMP's
    worker threads keep spinning for a while after their library's last call, so alternating
    libraries block by block would have each one's threads compete with the other's (on two
    cores, PyTorch's LeNet step ran 2.5 times slower that way); :func:`measure`'s warm-up at
    the start of each turn lets them settle. Each step's time is its fastest round's.
    """
    if budget_s <= 0 or rounds < 1 or not steps:
        msg = (f"measure_interleaved: needs steps, a positive budget_s and rounds ≥ 1, got "
               f"{len(steps)} steps, {budget_s}, {rounds}")
        raise ValueError(msg)
    share = budget_s / (rounds * len(steps))
    results: list[list[Timing]] = [[] for _ in steps]
    for _ in range(rounds):
        for i, (step, sync) in enumerate(steps):
            results[i].append(measure(step, sync=sync, budget_s=share, repeats=repeats))
    out = []
    for timings in results:
        best = min(timings, key=lambda t: t.seconds)
        everything = [t.median_seconds for t in timings]
        out.append(Timing(best.seconds, statistics.median(everything),
                          sum(t.steps for t in timings)))
    return out


def _blas_info() -> list[dict[str, Any]]:
    """BLAS/OpenMP thread pools as threadpoolctl sees them (empty without threadpoolctl)."""
    try:
        threadpoolctl = importlib.import_module("threadpoolctl")
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "num_threads", "version", "architecture",
            "threading_layer")
    pools = []
    for pool in threadpoolctl.threadpool_info():
        entry = {k: pool.get(k) for k in keep if k in pool}
        path = Path(str(pool.get("filepath", "")))
        entry["library"] = f"{path.parent.name}/{path.name}"  # whose copy: numpy.libs, scipy.libs
        pools.append(entry)
    return pools


OPENBLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
"""Settings that pin OpenBLAS's kernel and cache model when NumPy loads it. A machine may set
them for other software; they slow current NumPy, so benchmarks that compare NumPy with other
libraries run without them (``nnbackend bench`` restarts itself without them:
:func:`without_openblas_env`; for pytest, ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE``)."""

_ENV_VARS = (*OPENBLAS_ENV, "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
             "NNBACKEND")


def openblas_env() -> dict[str, str]:
    """The :data:`OPENBLAS_ENV` settings present in this process's environment."""
    return {name: os.environ[name] for name in OPENBLAS_ENV if name in os.environ}


def without_openblas_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default: this process's) without :data:`OPENBLAS_ENV`."""
    env = dict(os.environ if environ is None else environ)
    for name in OPENBLAS_ENV:
        env.pop(name, None)
    return env


_CORENAME_SYMBOLS = ("openblas_get_corename", "scipy_openblas_get_corename64_",
                     "scipy_openblas_get_corename", "openblas_get_corename64_")


def _corename_from_library() -> str | None:
    """OpenBLAS's ``openblas_get_corename()`` from the copy mapped into this process (Linux),
    for when threadpoolctl is not installed."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return None
    ctypes = importlib.import_module("ctypes")
    for path in sorted(p for p in paths if "numpy" in p) or sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for symbol in _CORENAME_SYMBOLS:
            function = getattr(lib, symbol, None)
            if function is not None:
                function.restype = ctypes.c_char_p
                name = function()
                return name.decode() if name else None
    return None


def blas_kernel() -> str | None:
    """The kernel NumPy's BLAS runs (OpenBLAS's core name, such as ``SkylakeX`` or ``Zen``):
    threadpoolctl's ``architecture``, else ``openblas_get_corename`` through ctypes."""
    blas = [p for p in _blas_info() if p.get("user_api") == "blas"]
    blas = [p for p in blas if "numpy" in p["library"]] or blas
    if blas and blas[0].get("architecture"):
        return str(blas[0]["architecture"])
    return _corename_from_library()


def thread_info() -> dict[str, Any]:
    """Threads of NumPy's BLAS and of PyTorch (when imported), the BLAS kernel, and the
    :data:`OPENBLAS_ENV` settings."""
    pools = _blas_info()
    blas = [p for p in pools if p.get("user_api") == "blas"]
    blas = [p for p in blas if "numpy" in p["library"]] or blas  # NumPy's own copy, if known
    info: dict[str, Any] = {
        "blas": blas[0].get("internal_api") if blas else None,
        "blas_threads": blas[0].get("num_threads") if blas else None,
        "blas_kernel": blas_kernel(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
    return info


def machine_info() -> dict[str, Any]:
    """Versions, CPU, BLAS threads and environment settings that shape the numbers."""
    info: dict[str, Any] = {
        "nnbackend": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "array_api_compat": array_api_compat.__version__,
        "thread_pools": _blas_info(),
        "blas_kernel": blas_kernel(),
        "env": {var: os.environ.get(var) for var in _ENV_VARS},
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = {
            "version": torch.__version__,
            "num_threads": torch.get_num_threads(),
            "num_interop_threads": torch.get_num_interop_threads(),
            "cuda": torch.cuda.is_available(),
        }
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        info["cupy"] = {"version": cupy.__version__}
        try:
            be = get_backend("cupy")
            props = cupy.cuda.runtime.getDeviceProperties(be.device.id)
            info["cupy"]["device"] = props["name"].decode()
        except Exception:  # no usable device: version only
            pass
    return info
