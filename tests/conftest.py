"""The backend matrix that drives the test suite.

Every test that takes the ``case`` fixture runs on: NumPy float32 and float64; array-api-strict on
its CPU device, on ``Device("device1")`` (arrays created on the wrong device fail loudly) and on
``Device("no_float64")`` (float64 leaks fail loudly); PyTorch CPU; JAX CPU (float32, 64-bit types
off as JAX ships); the GPU-like test device of ``nnbackend.testing`` in float32 (device 0) and
float64 (device 1): arrays off the host, implicit host conversion refused, host reads counted;
PyTorch CUDA and CuPy (float32, float64) where a CUDA device is usable. Unavailable backends are
skipped with the reason.

Tests of placement only (where arrays go, not what they hold) take ``placement`` instead: the same
rows plus PyTorch's ``meta`` device, whose tensors have shapes and dtypes but no values.
"""

from __future__ import annotations

# Before anything imports SciPy: scikit-learn's Array API dispatch (and its estimator check
# check_array_api_input, which otherwise skips) needs SciPy's Array API support, which SciPy
# reads from this variable once, at its import.
import os

os.environ.setdefault("SCIPY_ARRAY_API", "1")

import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend.backend import _cupy_status, dtype_name

if importlib.util.find_spec("jax") is not None:
    # Decided once for the whole test process: JAX as its users get it by default, without
    # 64-bit types (float64 and int64 requests need jax_enable_x64; the JAX row is float32).
    import jax

    jax.config.update("jax_enable_x64", False)

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
    def has_float64(self) -> bool:
        """False on array-api-strict's "no_float64" device and on JAX without 64-bit types."""
        if "no_float64" in self.id:
            return False
        try:
            self.backend.dtype("float64")
        except TypeError:
            return False
        return True

    @property
    def index_dtype_name(self) -> str:
        """The backend's label and index dtype: int64, or int32 on JAX without 64-bit types."""
        return dtype_name(self.backend.index_dtype)

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


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _skip_unless(condition: bool, reason: str) -> Any:
    return pytest.mark.skipif(not condition, reason=reason)


def _torch_cuda() -> tuple[bool, str]:
    if not _installed("torch"):
        return False, "PyTorch is not installed"
    import torch

    if not torch.cuda.is_available():
        return False, f"PyTorch {torch.__version__} sees no CUDA device"
    return True, ""


def _cases() -> list[Any]:
    params: list[Any] = [
        pytest.param(("numpy", None, "float32"), id="numpy-float32"),
        pytest.param(("numpy", None, "float64"), id="numpy-float64"),
    ]
    for device, dtype in (("CPU_DEVICE", "float64"), ("device1", "float64"),
                          ("no_float64", "float32")):
        params.append(pytest.param(
            ("array_api_strict", device, dtype), id=f"strict-{device}",
            marks=_skip_unless(_installed("array_api_strict"), "array-api-strict is not installed"),
        ))
    params.append(pytest.param(
        ("torch", "cpu", "float64"), id="torch-cpu",
        marks=_skip_unless(_installed("torch"), "PyTorch is not installed"),
    ))
    params.append(pytest.param(
        ("jax", None, "float32"), id="jax-cpu",
        marks=_skip_unless(_installed("jax"), "JAX is not installed"),
    ))
    # The GPU-like test device: float32 on its device 0 (the "current device"), float64 on
    # device 1, where an allocation that forgets device= lands on the wrong device and fails.
    params.append(pytest.param(("gpulike", "0", "float32"), id="gpulike-float32"))
    params.append(pytest.param(("gpulike", "1", "float64"), id="gpulike-float64"))
    cuda, reason = _torch_cuda()
    params.append(pytest.param(
        ("torch", "cuda", "float32"), id="torch-cuda", marks=_skip_unless(cuda, reason),
    ))
    _, count, reason = _cupy_status()
    for dtype in ("float32", "float64"):
        params.append(pytest.param(
            ("cupy", None, dtype), id=f"cupy-{dtype}",
            marks=_skip_unless(count > 0, f"no CuPy backend: {reason}"),
        ))
    return params


def make_case(spec: tuple[str, str | None, str], case_id: str = "") -> Case:
    name, device, dtype = spec
    if name == "array_api_strict":
        import array_api_strict

        backend = nb.get_backend(array_api_strict, device=array_api_strict.Device(device))
    elif name == "gpulike":
        backend = nb.get_backend(f"gpulike:{device}")
    else:
        backend = nb.get_backend(name, device=device)
    return Case(case_id or f"{name}-{device}-{dtype}", backend, dtype)


@pytest.fixture(params=_cases())
def case(request: pytest.FixtureRequest) -> Case:
    """A backend of the matrix with the dtype tests compute in."""
    return make_case(request.param, request.node.callspec.id)


@pytest.fixture(params=[*_cases(), pytest.param(
    ("torch", "meta", "float32"), id="torch-meta",
    marks=_skip_unless(_installed("torch"), "PyTorch is not installed"),
)])
def placement(request: pytest.FixtureRequest) -> Case:
    """A row of the matrix, or PyTorch's ``meta`` device: for tests of where arrays go only."""
    return make_case(request.param, request.node.callspec.id)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"nnbackend {row.name}: {row.reason}" for row in nb.available_backends()]
