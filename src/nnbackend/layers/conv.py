"""Convolution layers ``Conv1d`` and ``Conv2d`` over :mod:`nnbackend.functional.conv`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from .._checks import check_flag, check_int
from .._typing import Array, Backprop
from ..backend import dtype_name, get_backend
from ..functional.conv import (
    ConvGeometry,
    ConvWorkspace,
    _ints,
    _padding,
    conv_backward,
    conv_forward,
    conv_geometry,
)
from ..init import Initializer, draw
from .module import Context, Module, Parameter

__all__ = ["Conv1d", "Conv2d"]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class _ConvNd(Module):
    """The shared body of :class:`Conv1d` and :class:`Conv2d` (``spatial`` axes)."""

    spatial: ClassVar[int]
    hands_over_output = True  # y and ∂L/∂x are new arrays (the workspace lends only buffers
    hands_over_input_grad = True  # that never leave the functional code)
    _GEOMETRIES_KEPT = 8  # input shapes remembered (the last batch of an epoch is smaller)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: str | int | tuple[int, ...] = 0,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        init: str | Initializer = "he",
        dtype: Any = None,
        backend: Any = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        name, n = type(self).__name__, self.spatial
        self.in_channels = check_int(in_channels, what=f"{name}: in_channels", minimum=1)
        self.out_channels = check_int(out_channels, what=f"{name}: out_channels", minimum=1)
        self.groups = check_int(groups, what=f"{name}: groups", minimum=1)
        for what, channels in (("in_channels", self.in_channels),
                               ("out_channels", self.out_channels)):
            if channels % self.groups:
                msg = (f"{name}: {what}={channels} must be divisible by groups={self.groups}")
                raise ValueError(msg)
        self.kernel_size = _ints(kernel_size, n, caller=name, name="kernel_size", minimum=1)
        self.stride = _ints(stride, n, caller=name, name="stride", minimum=1)
        self.dilation = _ints(dilation, n, caller=name, name="dilation", minimum=1)
        _padding(padding, self.kernel_size, self.stride, self.dilation, n, name)  # checks it
        self.padding: str | tuple[int, ...] = (
            padding if isinstance(padding, str) else _ints(padding, n, caller=name,
                                                           name="padding", minimum=0))
        if padding_mode not in _PADDING_MODES:
            msg = f"{name}: padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}"
            raise ValueError(msg)
        if padding_mode != "zeros":
            msg = (f"{name}: padding_mode={padding_mode!r} is not implemented; only 'zeros' "
                   "(PyTorch's default) is")
            raise NotImplementedError(msg)
        self.padding_mode = padding_mode
        check_flag(bias, caller=name, name="bias")
        be = get_backend(backend)
        dt = be.dtype(dtype)
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        weight = draw(init, shape, seed, where=f"{name}({self.in_channels}, {self.out_channels})")
        self.weight = Parameter(be.asarray(weight, dtype=dt, copy=True), "weight")
        self.bias = Parameter(be.zeros((self.out_channels,), dtype=dt), "bias") if bias else None
        self._init_name = init if isinstance(init, str) else None  # for config()
        self._workspace = ConvWorkspace()
        self._geometries: dict[tuple[int, ...], ConvGeometry] = {}

    # ---------------------------------------------------------------- description

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (tuples as lists in JSON), ``init`` when given by name,
        and the parameters' dtype as it is now."""
        config: dict[str, Any] = {
            "in_channels": self.in_channels, "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size), "stride": list(self.stride),
            "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
            "dilation": list(self.dilation), "groups": self.groups,
            "bias": self.bias is not None, "padding_mode": self.padding_mode,
        }
        if self._init_name is not None:
            config["init"] = self._init_name
        config["dtype"] = dtype_name(self.weight.dtype)
        return config

    def extra_repr(self) -> str:
        """PyTorch's: ``1, 6, kernel_size=(5, 5), stride=(1, 1), padding=(2, 2)``."""
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0,) * self.spatial:
            text += f", padding={self.padding}"
        if self.dilation != (1,) * self.spatial:
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return text

    # ---------------------------------------------------------------- the protocol

    def _geometry(self, shape: tuple[int, ...]) -> ConvGeometry:
        """The checked sizes for an input of ``shape`` (remembered: one lookup per step)."""
        geometry = self._geometries.get(shape)
        if geometry is None:
            geometry = conv_geometry(
                shape, self.weight.shape, stride=self.stride, padding=self.padding,
                dilation=self.dilation, groups=self.groups, spatial=self.spatial,
                caller=repr(self))
            if len(self._geometries) >= self._GEOMETRIES_KEPT:
                self._geometries.clear()
            self._geometries[shape] = geometry
        return geometry

    def check_input(self, x: Array, ctx: Context) -> None:
        self._geometry(tuple(x.shape))

    def _reference_array(self) -> Array:
        return self.weight.data

    def infer(self, x: Array, ctx: Context) -> Array:
        bias = self.bias
        y, saved = conv_forward(x, self.weight.data, None if bias is None else bias.data,
                                self._geometry(tuple(x.shape)), xp=ctx.xp,
                                workspace=self._workspace)
        saved.release()
        return y

    def forward_pass(self, x: Array, ctx: Context) -> tuple[Array, Backprop]:
        weight, bias, xp, input_grad = self.weight, self.bias, ctx.xp, ctx.input_grad
        y, saved = conv_forward(x, weight.data, None if bias is None else bias.data,
                                self._geometry(tuple(x.shape)), xp=xp,
                                workspace=self._workspace)

        def backprop(dy: Array) -> Array | None:
            with_bias = bias is not None and bias.requires_grad
            dx, dW, db = conv_backward(
                dy, saved, input_grad=input_grad, weight_grad=weight.requires_grad,
                bias_grad=with_bias, xp=xp,
                weight_grad_out=weight.grad_buffer if weight.grad is None else None,
                bias_grad_out=None if bias is None or bias.grad is not None
                else bias.grad_buffer,
            )
            if dW is not None:
                weight.accumulate_grad(dW)
            if bias is not None and db is not None:
                bias.accumulate_grad(db)
            return dx

        return y, backprop


class Conv2d(_ConvNd):
    """2-D convolution over (N, C, H, W) inputs (or one sample (C, H, W)), as
    ``torch.nn.Conv2d``: y = b + W ⋆ x (cross-correlation), per group of channels.

    Parameters
    ----------
    in_channels, out_channels : int
        C of the input and of the output; both divisible by ``groups``.
    kernel_size : int or (int, int)
        (kh, kw).
    stride, dilation : int or (int, int)
        Positive.
    padding : int, (int, int), "valid" or "same"
        Zeros on each side ("same": output size = input size, stride 1 only; an odd total
        padding puts the extra zero at the bottom/right, as PyTorch does).
    groups : int
        Input and output channels split into ``groups`` independent convolutions
        (``groups = in_channels``: depthwise).
    bias : bool
        Learn a bias b (out_channels,), initialised to zero.
    padding_mode : "zeros"
        Only zero padding is implemented (PyTorch's other modes are refused).
    init : {"he", "xavier", "lecun"} or callable
        Initialiser of W, with fan_in = in_channels/groups · kh · kw (see
        :mod:`nnbackend.init`), drawn on the host from ``numpy.random.default_rng(seed)`` as
        :class:`~nnbackend.layers.Linear`'s.
    dtype, backend, seed :
        As :class:`~nnbackend.layers.Linear`'s.

    Attributes
    ----------
    weight : Parameter
        (out_channels, in_channels / groups, kh, kw), PyTorch's layout and name.
    bias : Parameter or None
        (out_channels,).

    Output (N, out_channels, OH, OW) with OH = ⌊(H + pad_top + pad_bottom − d_h·(kh − 1) − 1)
    / s_h⌋ + 1 (likewise OW). Backward: ∂L/∂W from the forward's im2col columns, ∂L/∂b = Σ δ,
    ∂L/∂x only when the context asks (never for the first layer of a network); see
    :mod:`nnbackend.functional.conv` for the formulas and the layout.
    """

    spatial = 2


class Conv1d(_ConvNd):
    """1-D convolution over (N, C, L) inputs (or one sample (C, L)), as ``torch.nn.Conv1d``.

    Arguments as :class:`Conv2d`'s, one number each (a 1-tuple is accepted): ``weight`` is
    (out_channels, in_channels / groups, k), the output (N, out_channels, OL) with
    OL = ⌊(L + pad_left + pad_right − d·(k − 1) − 1) / s⌋ + 1.
    """

    spatial = 1


def conv_state_size(config: Mapping[str, Any], spatial: int) -> int:
    """W (out, in/groups, *kernel) and b (out,): what a Conv layer allocates (0 for arguments
    its constructor refuses)."""
    n_in, n_out, groups = (config.get(k) for k in ("in_channels", "out_channels", "groups"))
    groups = 1 if groups is None else groups
    kernel = config.get("kernel_size")
    kernel = [kernel] * spatial if isinstance(kernel, int) else kernel
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
               for v in (n_in, n_out, groups)) or not isinstance(kernel, list | tuple) \
            or not all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in kernel):
        return 0
    assert isinstance(n_in, int) and isinstance(n_out, int) and isinstance(groups, int)
    return n_out * (n_in // groups) * math.prod(kernel) + (
        n_out if config.get("bias", True) else 0)
