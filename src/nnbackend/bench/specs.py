"""What is benchmarked: the MLP sizes, the workloads' names and learning rates, the data and the
initial weights every target starts from (see :mod:`nnbackend.bench`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import get_backend, to_numpy
from ..layers import Linear, Module, ReLU, Sequential

__all__ = [
    "ADAM_LR",
    "SGD_LR",
    "SIZES",
    "WORKLOADS",
    "MLPSpec",
    "build_model",
    "host_parameters",
    "make_data",
]


SGD_LR = 0.01
"""Learning rate of the ``train-sgd`` workload (every target)."""
ADAM_LR = 1e-3
"""Learning rate of the ``train-adam`` workload (every target; other Adam settings default)."""

WORKLOADS = ("forward", "fwd-bwd", "train-sgd", "train-adam")
"""The benchmarked steps, in table order (see :mod:`nnbackend.bench`)."""


@dataclass(frozen=True)
class MLPSpec:
    """An MLP shape and its default batch size.

    Attributes
    ----------
    name : str
    widths : tuple of int
        n₀ (inputs), the hidden widths, C (classes): ``(64, 128, 10)`` is 64 → 128 → 10.
    batch : int
        B, the batch size of the benchmark.
    """

    name: str
    widths: tuple[int, ...]
    batch: int

    @property
    def layers(self) -> tuple[tuple[int, int], ...]:
        """(nᵢ, nₒ) of each Linear layer."""
        return tuple(zip(self.widths[:-1], self.widths[1:], strict=True))

    @property
    def label(self) -> str:
        """``"64-128-10"``."""
        return "-".join(str(w) for w in self.widths)

    def flops(self, workload: str, batch: int | None = None) -> float:
        """Matrix-product FLOPs of one step: 2 B Σ nᵢ nₒ for forward, 6 B Σ nᵢ nₒ otherwise."""
        _check_workload(workload)
        factor = 2 if workload == "forward" else 6
        return float(factor * (batch or self.batch) * sum(i * o for i, o in self.layers))


SIZES: dict[str, MLPSpec] = {
    "tiny": MLPSpec("tiny", (8, 16, 4), 4),  # for tests: not listed in the command's help
    "small": MLPSpec("small", (64, 128, 10), 32),
    "medium": MLPSpec("medium", (784, 256, 10), 128),
    "large": MLPSpec("large", (784, 1024, 1024, 10), 256),
}
"""The benchmarked MLPs by name (``tiny`` exists for fast tests)."""

_PUBLIC_SIZES = ("small", "medium", "large")


def _check_workload(workload: str) -> None:
    if workload not in WORKLOADS:
        msg = f"unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}"
        raise ValueError(msg)


def make_data(
    spec: MLPSpec, batch: int | None = None, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One batch on the host: x ~ N(0, 1) (B, n₀) float32 and labels (B,) int64 in [0, C)."""
    batch = batch or spec.batch
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, spec.widths[0]), dtype=np.float32)
    labels = rng.integers(0, spec.widths[-1], size=batch, dtype=np.int64)
    return x, labels


def build_model(spec: MLPSpec, backend: Any = "numpy", *, seed: int = 0,
                dtype: Any = None) -> Sequential:
    """nnbackend's MLP for ``spec``: Linear layers (He init, seeds ``seed``, ``seed + 1``, ...)
    with ReLU between them and no activation after the last."""
    be = get_backend(backend)
    layers: list[Module] = []
    for i, (n_in, n_out) in enumerate(spec.layers):
        if i:
            layers.append(ReLU())
        layers.append(Linear(n_in, n_out, seed=seed + i, dtype=dtype, backend=be))
    return Sequential(*layers)


def host_parameters(model: Sequential) -> list[tuple[np.ndarray, np.ndarray]]:
    """Host copies of (W (nₒ, nᵢ), b (nₒ,)) of each Linear layer of ``model``, in order."""
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for i, m in enumerate(model):
        if isinstance(m, Linear):
            if m.bias is None:
                msg = f"host_parameters: layer {i} ({m}) has no bias; every Linear layer needs one"
                raise ValueError(msg)
            pairs.append((to_numpy(m.weight.data).copy(), to_numpy(m.bias.data).copy()))
    return pairs
