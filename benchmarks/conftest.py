"""The benchmark suite: ``pytest benchmarks/ --benchmark-only``.

Kept out of the normal test run (pyproject's ``testpaths`` is ``["tests"]``) and independent of
``tests/conftest.py``: this folder runs on its own. Every benchmark synchronises the device
before the timer stops and records its derived numbers (samples/s, GFLOP/s, GEMM fraction,
array calls per step, thread settings) in ``extra_info``; none asserts a time.
"""

from __future__ import annotations

import importlib.util
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


@pytest.fixture
def target(request: pytest.FixtureRequest) -> bench.Target:
    """The benchmark target named by the test's ``target_name`` parameter, or a skip."""
    name = request.node.callspec.params["target_name"]
    try:
        return bench.get_target(name)
    except nb.BackendUnavailableError as exc:
        pytest.skip(f"{name} is unavailable: {exc}")
