"""Which kind of compiled step ``compile_step`` gives on a row of the matrix (the tests' own
statement of the dispatch, checked against the step's ``kind``)."""

from __future__ import annotations

from typing import Any


def expected_kind(case: Any) -> str:
    """``"jax-jit"`` on JAX, ``"cuda-graph"`` on CuPy and PyTorch CUDA, else ``"eager"``."""
    be = case.backend
    if be.name == "jax":
        return "jax-jit"
    if be.name == "cupy" or (be.name == "torch" and getattr(be.device, "type", "") == "cuda"):
        return "cuda-graph"
    return "eager"
