"""How the tests compare a backend's result with a float64 reference, in one place.

The reference (PyTorch autograd in float64, a closed form) sees the values the case's dtype
holds (:func:`held`); :func:`close` compares float64 rows to 1e-10 and float32 rows to the
matrix's tolerance, relative to the scale of the reference, so entries near zero are compared
on that scale rather than their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

import nnbackend as nb


def held(case: Any, a: Any) -> np.ndarray:
    """The float64 values ``a`` becomes in the case's dtype (what the reference must see)."""
    return np.asarray(a).astype(case.dtype_name).astype(np.float64)


def close(got: Any, want: Any, case: Any, what: str) -> None:
    """``got`` (any backend) equals the reference ``want`` to the case's tolerance."""
    got = nb.to_numpy(got)
    want = np.asarray(want)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = float(np.abs(want).max()) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=case.rtol, atol=case.rtol * (scale or 1.0),
                               err_msg=what)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """PyTorch's references on one thread: its tiny reference ops ran ~20 ms a call with two
    threads on two busy cores (the workers wait for each other), 0.1 ms on one. Import it into
    a test module to use it there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
