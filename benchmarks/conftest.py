"""The benchmark suite: ``pytest benchmarks/ --benchmark-only``.

Kept out of the normal test run (pyproject's ``testpaths`` is ``["tests"]``) and independent of
``tests/conftest.py``: this folder runs on its own. Every benchmark synchronises the device
before the timer stops and records its derived numbers (samples/s, GFLOP/s, GEMM fraction,
array calls per step, thread settings) in ``extra_info``; none asserts a time.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import pytest

if importlib.util.find_spec("torch") is not None:
    # Import PyTorch once, up front, before any benchmark: its import is slow and inspects
    # every loaded module, which must not happen inside a measurement.
    import torch  # noqa: F401

import nnbackend as nb
from nnbackend import bench

if importlib.util.find_spec("pytest_benchmark") is None:

    @pytest.fixture
    def benchmark() -> Any:
        """Stand-in that skips: the suite needs pytest-benchmark."""
        pytest.skip("pytest-benchmark is not installed: pip install 'nnbackend[test]'")

else:

    def pytest_benchmark_update_machine_info(config: pytest.Config,
                                             machine_info: dict[str, Any]) -> None:
        """Add versions, BLAS threads and OPENBLAS_CORETYPE to the saved machine info."""
        machine_info["nnbackend"] = bench.machine_info()


def pytest_report_header(config: pytest.Config) -> list[str]:
    """The BLAS kernel NumPy runs, and a warning when OpenBLAS is pinned by the environment."""
    threads = bench.thread_info()
    lines = [f"nnbackend bench: NumPy BLAS {threads['blas']}, kernel {threads['blas_kernel']}, "
             f"{threads['blas_threads']} threads"]
    pinned = bench.openblas_env()
    if pinned:
        settings = " ".join(f"{k}={v}" for k, v in pinned.items())
        unset = " ".join(f"-u {k}" for k in pinned)
        lines.append(f"WARNING: {settings} is set and slows NumPy against the other libraries; "
                     f"run this suite as: env {unset} pytest benchmarks/ ...")
    return lines


@pytest.fixture
def target(request: pytest.FixtureRequest) -> bench.Target:
    """The benchmark target named by the indirect parameter ``target``, or a skip."""
    name: str = request.param
    try:
        return bench.get_target(name)
    except nb.BackendUnavailableError as exc:
        pytest.skip(f"{name} is unavailable: {exc}")


@pytest.fixture
def median_seconds(benchmark: Any) -> Callable[[], float | None]:
    """Call after the benchmark ran: its median in seconds (None under --benchmark-disable)."""

    def median() -> float | None:
        stats = getattr(getattr(benchmark, "stats", None), "stats", None)
        return None if stats is None else float(stats.median)

    return median
