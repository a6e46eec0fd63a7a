"""The fully connected layer z = x Wᵀ + b."""

from __future__ import annotations

from typing import Any

from .._checks import check_int
from .._typing import Array, Backprop, Namespace
from ..backend import dtype_name, get_backend
from ..functional.linear import linear, linear_backward
from ..init import Initializer, draw
from .module import Context, Module, Parameter

__all__ = ["Linear"]


class InputShapeError(ValueError):
    """An input of the wrong shape for a layer: its last axis is not ``in_features`` wide.

    The message gives the expected shape in the input's rank: ``(N, in)`` for a matrix, else
    ``(..., in)`` (any leading axes, as the layer accepts).

    Containers prepend the layer's index to :attr:`path` as the error passes through them, so
    the message names the layer deep inside a model: ``Sequential: layer 1.0 Linear(6→2) ...``.
    """

    def __init__(self, layer: str, expected: int, shape: tuple[int, ...]) -> None:
        super().__init__(layer, expected, shape)
        self.layer, self.expected, self.shape = layer, expected, shape
        self.path: list[int | str] = []  # indices, and names such as "block" (Residual)
        self.container = ""  # the outermost container the error passed through

    def inside(self, container: str, step: int | str) -> None:
        """Record that the error passed through ``container``'s child ``step``."""
        self.path.insert(0, step)
        self.container = container

    def __str__(self) -> str:
        where = self.layer
        if self.path:
            where = f"{self.container}: layer {'.'.join(map(str, self.path))} {where}"
        expected = "N" if len(self.shape) == 2 else "..."
        return f"{where} expected input of shape ({expected}, {self.expected}), got {self.shape}"


class Linear(Module):
    """Fully connected layer: z = x Wᵀ + b (per sample, the seed's z = W a + b).

    Parameters
    ----------
    in_features, out_features : int
        Widths of the last axis of the input x (N, ..., in_features) and of the output z
        (N, ..., out_features): the map applies to the last axis of inputs of any rank, as
        PyTorch's does (a single sample (in_features,) too).
    bias : bool
        Learn a bias b of shape (out_features,), initialised to zero.
    init : {"he", "xavier", "lecun"} or callable
        Initialiser of W (out_features, in_features): a name, or ``f(shape, rng) -> ndarray``.
        Drawn on the host from ``numpy.random.default_rng(seed)`` in float64, cast to ``dtype``,
        then transferred once: the same seed gives bit-identical weights on every backend.
    dtype : optional
        float32 (default) or float64.
    backend : optional
        Where the parameters live (see :func:`nnbackend.get_backend`; default: the current one).
    seed : int, optional
        Seed of the initialiser; ``None`` draws fresh entropy.

    Backward, with δ = ∂L/∂z: ∂L/∂W = δᵀ x, ∂L/∂b = Σ δ (both summed over every leading
    axis, as one GEMM over all positions), ∂L/∂x = δ W.
    """

    hands_over_output = True  # z and ∂L/∂x are new arrays; the backward keeps x and W only
    hands_over_input_grad = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        init: str | Initializer = "he",
        dtype: Any = None,
        backend: Any = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_int(in_features, what="Linear: in_features", minimum=1)
        self.out_features = check_int(out_features, what="Linear: out_features", minimum=1)
        be = get_backend(backend)
        dt = be.dtype(dtype)
        weight = draw(init, (self.out_features, self.in_features), seed,
                      where=f"Linear({self.in_features}→{self.out_features})")
        self.weight = Parameter(be.asarray(weight, dtype=dt, copy=True), "weight")
        self.bias = Parameter(be.zeros((self.out_features,), dtype=dt), "bias") if bias else None
        self._init_name = init if isinstance(init, str) else None  # for config()

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (see :mod:`nnbackend.layers.description`): the widths,
        ``bias``, ``init`` when it was given by name (a function is not recorded: the weights
        come from the state) and the parameters' dtype as it is now."""
        config: dict[str, Any] = {"in_features": self.in_features,
                                  "out_features": self.out_features,
                                  "bias": self.bias is not None}
        if self._init_name is not None:
            config["init"] = self._init_name
        config["dtype"] = dtype_name(self.weight.dtype)
        return config

    def extra_repr(self) -> str:
        return f"{self.in_features}→{self.out_features}" + ("" if self.bias else ", bias=False")

    def check_input(self, x: Array, ctx: Context) -> None:
        if not x.ndim or x.shape[-1] != self.in_features:  # _check_width, without a call
            raise InputShapeError(repr(self), self.in_features, tuple(x.shape))

    def _check_width(self, x: Array) -> None:
        """Raise :class:`InputShapeError` unless x has shape (..., in_features), any rank >= 1.

        Also run by ``forward_pass``/``infer``, which containers call without ``check_input``:
        one comparison, and a wrong width is named here instead of in the library's matmul.
        """
        if not x.ndim or x.shape[-1] != self.in_features:
            raise InputShapeError(repr(self), self.in_features, tuple(x.shape))

    def _reference_array(self) -> Array:
        return self.weight.data

    def infer(self, x: Array, ctx: Context) -> Array:
        self._check_width(x)
        return linear(x, self.weight.data, None if self.bias is None else self.bias.data)

    def forward_pass(self, x: Array, ctx: Context) -> tuple[Array, Backprop]:
        self._check_width(x)
        weight, bias = self.weight, self.bias
        xp, input_grad = ctx.xp, ctx.input_grad
        W = weight.data
        z = linear(x, W, None if bias is None else bias.data)

        def backprop(dz: Array) -> Array | None:
            return self.backward(dz, x, W, input_grad=input_grad, xp=xp)

        return z, backprop

    def backward(self, dz: Array, x: Array, W: Array, *, input_grad: bool,
                 xp: Namespace) -> Array | None:
        """The backward pass of z = x Wᵀ + b from δ = ∂L/∂z: ∂L/∂W and ∂L/∂b accumulated into
        the parameters' gradients (written straight into their flat buffers' views where the
        backend has them; no ∂L/∂b for a frozen bias), and ∂L/∂x returned (None unless
        ``input_grad``). ``x`` and ``W`` are the forward's input and weight array."""
        weight, bias = self.weight, self.bias
        dx, dW, db = linear_backward(
            dz, x, W, input_grad=input_grad,
            bias_grad=bias is not None and bias.requires_grad, xp=xp,
            weight_grad_out=weight.grad_buffer if weight.grad is None else None,
            bias_grad_out=bias.grad_buffer if bias is not None and bias.grad is None else None,
        )
        weight.accumulate_grad(dW)
        if bias is not None and db is not None:
            bias.accumulate_grad(db)
        return dx

