"""Layers that only change an array's shape: ``Flatten`` and ``Unflatten``, as PyTorch's.

Both are reshapes, so the backward pass reshapes ∂L/∂y back to the input's shape; a reshape of
a contiguous array is a view (no copy on NumPy, CuPy and PyTorch).
"""

from __future__ import annotations

import math
import operator
from typing import Any

from .._typing import Array, Backprop
from .linear import InputShapeError
from .module import Context, Module

__all__ = ["Flatten", "LayerInputError", "Unflatten"]


class LayerInputError(InputShapeError):
    """An input a layer cannot take, with the reason: ``"<layer>: <detail>"``.

    A :class:`~nnbackend.layers.linear.InputShapeError`, so containers prepend the layer's
    index path as the error passes through them (``Sequential: layer 2 MaxPool2d(...): ...``).
    """

    def __init__(self, layer: str, detail: str) -> None:
        ValueError.__init__(self, layer, detail)
        self.layer, self.detail = layer, detail
        self.expected, self.shape = 0, ()
        self.path: list[int | str] = []
        self.container = ""

    def __str__(self) -> str:
        where = self.layer
        if self.path:
            where = f"{self.container}: layer {'.'.join(map(str, self.path))} {where}"
        return f"{where}: {self.detail}"


def _int(value: Any, layer: str, name: str) -> int:
    if isinstance(value, bool):
        msg = f"{layer}: {name} must be an int, got {value!r}"
        raise TypeError(msg)
    try:
        return operator.index(value)
    except TypeError:
        msg = f"{layer}: {name} must be an int, got {value!r}"
        raise TypeError(msg) from None


def _axis(dim: int, rank: int, layer: str, name: str, shape: tuple[int, ...]) -> int:
    """``dim`` as an index in [0, rank), as PyTorch normalises a dimension (a 0-d input counts
    as rank 1)."""
    rank = max(rank, 1)
    if not -rank <= dim < rank:
        raise LayerInputError(layer, f"{name}={dim} is out of range for an input of shape "
                                     f"{shape} (rank {len(shape)})")
    return dim % rank


class _Reshape(Module):
    """A layer that only reshapes: y = reshape(x, f(x.shape)); ∂L/∂x = ∂L/∂y reshaped back.
    Subclasses give :meth:`_output_shape` (which also checks the input)."""

    def _output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        raise NotImplementedError

    def check_input(self, x: Array, ctx: Context) -> None:
        self._output_shape(tuple(x.shape))

    def infer(self, x: Array, ctx: Context) -> Array:
        return ctx.xp.reshape(x, self._output_shape(tuple(x.shape)))

    def forward_pass(self, x: Array, ctx: Context) -> tuple[Array, Backprop]:
        xp, shape = ctx.xp, tuple(x.shape)
        y = xp.reshape(x, self._output_shape(shape))
        if not ctx.input_grad:
            return y, _no_gradient

        def backprop(dy: Array) -> Array:
            return xp.reshape(dy, shape)

        return y, backprop


class Flatten(_Reshape):
    """Merge the axes ``start_dim`` … ``end_dim`` into one: (N, C, H, W) → (N, C·H·W).

    Parameters
    ----------
    start_dim, end_dim : int
        The first and last axis merged (negative counts from the end), PyTorch's defaults
        1 and −1: everything but the batch axis.

    Backward: ∂L/∂x = ∂L/∂y reshaped to x's shape.
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = _int(start_dim, "Flatten", "start_dim")
        self.end_dim = _int(end_dim, "Flatten", "end_dim")
        if self.end_dim >= -1:
            # The width of the last axis changes (or may): Sequential's width check must not
            # take it as kept (None: not known before the input's rank is seen).
            self.out_features: int | None = None

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (see :mod:`nnbackend.layers.description`)."""
        return {"start_dim": self.start_dim, "end_dim": self.end_dim}

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def _output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if not shape:
            return (1,)
        where = repr(self)
        start = _axis(self.start_dim, len(shape), where, "start_dim", shape)
        end = _axis(self.end_dim, len(shape), where, "end_dim", shape)
        if start > end:
            raise LayerInputError(where, f"start_dim={self.start_dim} comes after "
                                         f"end_dim={self.end_dim} for an input of shape {shape}")
        return (*shape[:start], math.prod(shape[start:end + 1]), *shape[end + 1:])

class Unflatten(_Reshape):
    """Split axis ``dim`` into ``unflattened_size``: (N, C·H·W) → (N, C, H, W).

    Parameters
    ----------
    dim : int
        The axis split (negative counts from the end).
    unflattened_size : tuple of int
        The sizes it is split into; one of them may be −1 (inferred from the axis's size).

    Backward: ∂L/∂x = ∂L/∂y reshaped to x's shape.
    """

    def __init__(self, dim: int, unflattened_size: Any) -> None:
        super().__init__()
        self.dim = _int(dim, "Unflatten", "dim")
        if isinstance(unflattened_size, int | str) or not hasattr(unflattened_size, "__iter__"):
            msg = f"Unflatten: unflattened_size must be a tuple of ints, got {unflattened_size!r}"
            raise TypeError(msg)
        sizes = tuple(_int(n, "Unflatten", "unflattened_size") for n in unflattened_size)
        if not sizes or any(n < -1 for n in sizes) or sizes.count(-1) > 1:
            msg = (
                "Unflatten: unflattened_size must be a non-empty tuple of non-negative ints, "
                f"with at most one -1, got {unflattened_size!r}"
            )
            raise ValueError(msg)
        self.unflattened_size = sizes
        if self.dim >= -1:
            self.out_features: int | None = None  # the last axis may change (see Flatten)

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (see :mod:`nnbackend.layers.description`)."""
        return {"dim": self.dim, "unflattened_size": list(self.unflattened_size)}

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"

    def _output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        where = repr(self)
        if not shape:
            raise LayerInputError(where, "cannot split an axis of a 0-d input")
        axis = _axis(self.dim, len(shape), where, "dim", shape)
        sizes, n = self.unflattened_size, shape[axis]
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if known == 0 or n % known:
                raise LayerInputError(where, f"axis {self.dim} of size {n} of input shape {shape} "
                                             f"cannot be split into {sizes}")
            sizes = tuple(n // known if s == -1 else s for s in sizes)
        elif known != n:
            raise LayerInputError(where, f"axis {self.dim} of input shape {shape} has size {n}, "
                                         f"but unflattened_size {sizes} holds {known}")
        return (*shape[:axis], *sizes, *shape[axis + 1:])



def _no_gradient(dy: Array) -> None:
    """The backward closure of a layer asked for no ∂L/∂x (it has no parameters either)."""
    return None
