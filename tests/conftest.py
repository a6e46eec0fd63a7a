"""The backend matrix that drives the test suite.

Every test that takes the ``case`` fixture runs on: NumPy float32 and float64; array-api-strict on
its CPU device, on ``Device("device1")`` (arrays created on the wrong device fail loudly) and on
``Device("no_float64")`` (float64 leaks fail loudly); PyTorch CPU when installed; CuPy when a CUDA
device is usable. Unavailable backends are skipped with the reason.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend.backend import _cupy_status, dtype_name

if importlib.util.find_spec("torch") is not None:
    # Import PyTorch once, up front: its import inspects every loaded module, and a test that
    # patches sys.modules["cupy"] (to simulate a missing CuPy) must not be the first to import it.
    import torch  # noqa: F401


@dataclass(frozen=True)
class Case:
    """One cell of the matrix: a backend and the floating dtype the test computes in."""

    id: str
    backend: nb.Backend
    dtype_name: str

    @property
    def xp(self) -> Any:
        return self.backend.xp

    @property
    def dtype(self) -> Any:
        return self.backend.dtype(self.dtype_name)

    @property
    def is_float64(self) -> bool:
        return self.dtype_name == "float64"

    @property
    def rtol(self) -> float:
        """A relative tolerance fit for comparing this dtype with a float64 reference."""
        return 1e-10 if self.is_float64 else 2e-5

    def asarray(self, host: Any, *, dtype: Any = "float") -> Any:
        """Host data on this backend: floats in the case's dtype, integers unchanged."""
        host = np.asarray(host)
        if dtype == "float":
            return self.backend.asarray(host, dtype=self.dtype_name)
        return self.backend.asarray(host, dtype=dtype)

    def check_placement(self, x: Any, *, dtype: str | None = None) -> None:
        """Assert ``x`` is an array of this backend's namespace and device, in ``dtype``."""
        import array_api_compat

        assert array_api_compat.array_namespace(x) is self.xp, type(x)
        assert array_api_compat.device(x) == self.backend.device
        assert dtype_name(x.dtype) == (dtype or self.dtype_name)


def _cases() -> list[Any]:
    params: list[Any] = [
        pytest.param(("numpy", None, "float32"), id="numpy-float32"),
        pytest.param(("numpy", None, "float64"), id="numpy-float64"),
    ]
    strict_missing = importlib.util.find_spec("array_api_strict") is None
    for device, dtype in (("CPU_DEVICE", "float64"), ("device1", "float64"),
                          ("no_float64", "float32")):
        params.append(pytest.param(
            ("array_api_strict", device, dtype), id=f"strict-{device}",
            marks=pytest.mark.skipif(strict_missing, reason="array-api-strict is not installed"),
        ))
    params.append(pytest.param(
        ("torch", "cpu", "float64"), id="torch-cpu",
        marks=pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="PyTorch is not installed"),
    ))
    _, count, reason = _cupy_status()
    params.append(pytest.param(
        ("cupy", None, "float64"), id="cupy",
        marks=pytest.mark.skipif(count == 0, reason=f"no CuPy backend: {reason}"),
    ))
    return params


def make_case(spec: tuple[str, str | None, str], case_id: str = "") -> Case:
    name, device, dtype = spec
    if name == "array_api_strict":
        import array_api_strict

        backend = nb.get_backend(array_api_strict, device=array_api_strict.Device(device))
    else:
        backend = nb.get_backend(name, device=device)
    return Case(case_id or f"{name}-{device}-{dtype}", backend, dtype)


@pytest.fixture(params=_cases())
def case(request: pytest.FixtureRequest) -> Case:
    """A backend of the matrix with the dtype tests compute in."""
    return make_case(request.param, request.node.callspec.id)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"nnbackend {row.name}: {row.reason}" for row in nb.available_backends()]
