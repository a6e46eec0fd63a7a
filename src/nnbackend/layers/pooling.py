"""Pooling layers over :mod:`nnbackend.functional.pooling`, as PyTorch's ``torch.nn`` ones:
``MaxPool1d``, ``MaxPool2d``, ``AvgPool1d``, ``AvgPool2d`` and ``AdaptiveAvgPool2d``.

They hold no parameters, buffers or state. The arguments are checked once, at construction
(with PyTorch's rules: kernel, stride and dilation positive, padding at most half the kernel);
the input's rank and size on every call, with errors naming the layer and the shapes. When the
caller wants no ∂L/∂x (the first layer of a network), the forward keeps nothing for a backward
pass and ``backprop`` returns None.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

from .._typing import Array, Backprop, Namespace
from ..functional import pooling as P
from .module import Context, Module
from .shape import LayerInputError, _no_gradient

__all__ = ["AdaptiveAvgPool2d", "AvgPool1d", "AvgPool2d", "MaxPool1d", "MaxPool2d"]

_Forward = Callable[[Array, P.PoolArgs, Namespace, bool], tuple[Array, "P.PoolSaved | None"]]
_Backward = Callable[[Array, P.PoolSaved, Namespace], Array]
_FORWARD: dict[str, _Forward] = {"max": P._max_forward, "avg": P._avg_forward}
_BACKWARD: dict[str, _Backward] = {"max": P._max_backward, "avg": P._avg_backward}


def _given(value: Any) -> Any:
    """An argument as PyTorch keeps it: an int, or a tuple (a JSON list becomes one)."""
    return tuple(value) if isinstance(value, list) else value


class _Pool(Module):
    """A window pooling layer: ``self._args`` (parsed once) and the functional pair."""

    _dims: ClassVar[int]
    _kind: ClassVar[str]  # "max" or "avg": the functional pair in _FORWARD, _BACKWARD
    _args: P.PoolArgs
    out_features = None  # the last axis changes: not a width Sequential can check

    def _parse(self, **kwargs: Any) -> None:
        name = type(self).__name__
        args = P.pool_args(name, self._kind, self._dims, **kwargs)
        self._args = dataclasses.replace(args, caller=repr(self))  # errors name the layer

    def _windows(self, x: Array) -> None:
        try:
            P.pool_windows(self._args, tuple(x.shape))
        except P.PoolingError as err:
            raise LayerInputError(err.caller, err.detail) from None

    def check_input(self, x: Array, ctx: Context) -> None:
        self._windows(x)

    def _run(self, x: Array, xp: Namespace, keep: bool) -> tuple[Array, P.PoolSaved | None]:
        try:
            return _FORWARD[self._kind](x, self._args, xp, keep)
        except P.PoolingError as err:
            raise LayerInputError(err.caller, err.detail) from None

    def infer(self, x: Array, ctx: Context) -> Array:
        return self._run(x, ctx.xp, False)[0]

    def forward_pass(self, x: Array, ctx: Context) -> tuple[Array, Backprop]:
        xp = ctx.xp
        if not ctx.input_grad:  # nothing before this layer is trained: keep nothing
            return self._run(x, xp, False)[0], _no_gradient
        y, saved = self._run(x, xp, True)
        backward = _BACKWARD[self._kind]
        assert saved is not None

        def backprop(dy: Array) -> Array:
            return backward(dy, saved, xp)

        return y, backprop


class _MaxPool(_Pool):
    _kind = "max"
    # ∂L/∂x is written into a new canvas (y is kept for the backward: not handed over; the
    # average's ∂L/∂x may be a broadcast view, which nobody may write into)
    hands_over_input_grad = True

    def __init__(
        self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
        return_indices: bool = False, ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if return_indices:
            msg = (
                f"{name}: return_indices=True is not supported (nnbackend has no MaxUnpool "
                "layer); leave it False"
            )
            raise NotImplementedError(msg)
        self.kernel_size = _given(kernel_size)
        self.stride = self.kernel_size if stride is None else _given(stride)
        self.padding = _given(padding)
        self.dilation = _given(dilation)
        self.return_indices = False
        self.ceil_mode = ceil_mode
        self._parse(kernel_size=self.kernel_size, stride=self.stride,
                    padding=self.padding, dilation=self.dilation, ceil_mode=ceil_mode)

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (see :mod:`nnbackend.layers.description`)."""
        return {"kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding,
                "dilation": self.dilation, "ceil_mode": self.ceil_mode}

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxPool2d(_MaxPool):
    """y[n, c, i, j] = max of x[n, c] over window (i, j), x (N, C, H, W) or (C, H, W).

    Parameters
    ----------
    kernel_size, stride, padding, dilation : int or (int, int)
        As ``torch.nn.MaxPool2d``'s: ``stride`` defaults to ``kernel_size``, padding (read as
        −∞) at most half the kernel.
    return_indices : bool
        Must be False (nnbackend has no MaxUnpool2d).
    ceil_mode : bool
        Round the output size up (the last window starting inside the input or its left
        padding).

    Output (N, C, OH, OW), OH = ⌊(H + 2p − d (k − 1) − 1) / s⌋ + 1 (⌈⌉ in ceil mode), OW
    alike. Backward: ∂L/∂y of each window to its first maximum in scan order (a NaN: its
    last NaN), as PyTorch's (see :mod:`nnbackend.functional.pooling`).
    """

    _dims = 2


class MaxPool1d(_MaxPool):
    """y[n, c, i] = max of x[n, c] over window i, x (N, C, L) or (C, L); arguments as
    :class:`MaxPool2d`'s, each an int (or a tuple of one)."""

    _dims = 1


class AvgPool2d(_Pool):
    """y[n, c, i, j] = Σ of x[n, c] over window (i, j) / divisor, x (N, C, H, W) or (C, H, W).

    Parameters
    ----------
    kernel_size, stride, padding : int or (int, int)
        As ``torch.nn.AvgPool2d``'s: ``stride`` defaults to ``kernel_size``, padding (read as
        0) at most half the kernel.
    ceil_mode : bool
        Round the output size up.
    count_include_pad : bool
        Divide by the window clipped to the padded input (True) or by its elements inside the
        input.
    divisor_override : int, optional
        Divide every window by this.

    Backward: ∂L/∂y / divisor added to every element of the window.
    """

    _dims = 2
    _kind = "avg"

    def __init__(
        self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
        count_include_pad: bool = True, divisor_override: int | None = None,
    ) -> None:
        super().__init__()
        self.kernel_size = _given(kernel_size)
        self.stride = self.kernel_size if stride is None else _given(stride)
        self.padding = _given(padding)
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override
        self._parse(kernel_size=self.kernel_size, stride=self.stride,
                    padding=self.padding, ceil_mode=ceil_mode,
                    count_include_pad=count_include_pad, divisor_override=divisor_override)

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (see :mod:`nnbackend.layers.description`)."""
        return {"kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding,
                "ceil_mode": self.ceil_mode, "count_include_pad": self.count_include_pad,
                "divisor_override": self.divisor_override}

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


def _single(value: Any) -> Any:
    """PyTorch's AvgPool1d keeps its arguments as 1-tuples; other values are left for the
    argument check to refuse."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    return _given(value)


class AvgPool1d(_Pool):
    """y[n, c, i] = Σ of x[n, c] over window i / divisor, x (N, C, L) or (C, L); arguments as
    :class:`AvgPool2d`'s (no ``divisor_override``, as PyTorch's), each an int (or a 1-tuple:
    kept as 1-tuples, as PyTorch does)."""

    _dims = 1
    _kind = "avg"

    def __init__(
        self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
        count_include_pad: bool = True,
    ) -> None:
        super().__init__()
        self.kernel_size = _single(kernel_size)
        self.stride = self.kernel_size if stride is None else _single(stride)
        self.padding = _single(padding)
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self._parse(kernel_size=self.kernel_size, stride=self.stride,
                    padding=self.padding, ceil_mode=ceil_mode,
                    count_include_pad=count_include_pad)

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (see :mod:`nnbackend.layers.description`)."""
        return {"kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding,
                "ceil_mode": self.ceil_mode, "count_include_pad": self.count_include_pad}

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """y (N, C, OH, OW) = the mean of x (N, C, H, W) (or (C, H, W)) over PyTorch's adaptive
    windows: rows [⌊i H / OH⌋, ⌈(i + 1) H / OH⌉), columns alike.

    Parameters
    ----------
    output_size : int or (int or None, int or None)
        (OH, OW); one int for both; None keeps that axis's size. ``AdaptiveAvgPool2d(1)`` is
        global average pooling.

    Backward: each window's ∂L/∂y / its size added to its elements.
    """

    out_features = None  # the last axis changes: not a width Sequential can check

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        self.output_size = _given(output_size)
        P.check_adaptive_output_size(self.output_size, "AdaptiveAvgPool2d")
        self._caller = repr(self)

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (see :mod:`nnbackend.layers.description`)."""
        return {"output_size": self.output_size}

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"

    def check_input(self, x: Array, ctx: Context) -> None:
        try:
            P.adaptive_output_size(self.output_size, tuple(x.shape), self._caller)
        except P.PoolingError as err:
            raise LayerInputError(err.caller, err.detail) from None

    def _run(self, x: Array, xp: Namespace, keep: bool) -> tuple[Array, P.PoolSaved | None]:
        try:
            return P._adaptive_forward(x, self.output_size, xp, keep, self._caller)
        except P.PoolingError as err:
            raise LayerInputError(err.caller, err.detail) from None

    def infer(self, x: Array, ctx: Context) -> Array:
        return self._run(x, ctx.xp, False)[0]

    def forward_pass(self, x: Array, ctx: Context) -> tuple[Array, Backprop]:
        xp = ctx.xp
        if not ctx.input_grad:
            return self._run(x, xp, False)[0], _no_gradient
        y, saved = self._run(x, xp, True)
        assert saved is not None

        def backprop(dy: Array) -> Array:
            return P.adaptive_avg_pool2d_backward(dy, saved, xp=xp)

        return y, backprop
