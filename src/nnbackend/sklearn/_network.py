"""The multilayer perceptron as nnbackend layers, and scikit-learn's view of its weights.

scikit-learn stores layer i as ``coefs_[i]`` of shape (n_in, n_out) and ``intercepts_[i]``
(n_out,), and computes a = f(a_prev @ coefs_[i] + intercepts_[i]). The training network is a
:class:`~nnbackend.Sequential` of :class:`~nnbackend.Linear` layers (weight (n_out, n_in): the
transpose, z = x Wᵀ + b is the same map) with the hidden activation between them and no output
activation: the losses of :mod:`._losses` take the last layer's pre-activations.

Glorot-uniform initial weights are drawn exactly as scikit-learn's ``_init_coef`` draws them,
from the estimator's NumPy ``RandomState`` on the host: U(−b, b) with
b = √(6 / (fan_in + fan_out)) (√(2 / (fan_in + fan_out)) for the logistic activation), the
weights of a layer and then its intercepts, layer after layer. So an estimator and
scikit-learn's with the same ``random_state`` start from identical weights.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._native import inner, into_kernels, masked_into, positive_part
from .._typing import Array, Namespace
from ..backend import Backend, to_numpy
from ..functional.activations import (
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    softmax,
    tanh,
    tanh_backward,
)
from ..functional.linear import linear, linear_backward
from ..layers import Linear, Module, ReLU, Sequential, Sigmoid, Tanh

__all__ = [
    "HIDDEN_ACTIVATIONS",
    "TrainingPasses",
    "build_network",
    "forward",
    "init_coefs",
    "linear_layers",
    "load_weights",
    "read_weights",
]

HIDDEN_ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
_LAYERS: dict[str, type[Module] | None] = {
    "identity": None, "logistic": Sigmoid, "tanh": Tanh, "relu": ReLU,
}


def init_coefs(
    layer_units: Sequence[int], activation: str, random_state: np.random.RandomState,
    dtype: np.dtype[Any],
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """scikit-learn's Glorot-uniform weights and intercepts for ``layer_units`` (host NumPy,
    same draws in the same order as ``BaseMultilayerPerceptron._init_coef``)."""
    factor = 2.0 if activation == "logistic" else 6.0
    coefs, intercepts = [], []
    for fan_in, fan_out in itertools.pairwise(layer_units):
        bound = np.sqrt(factor / (fan_in + fan_out))
        coefs.append(random_state.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype))
        intercepts.append(random_state.uniform(-bound, bound, fan_out).astype(dtype))
    return coefs, intercepts


def _zeros(shape: tuple[int, ...], rng: Any) -> np.ndarray:
    return np.zeros(shape)  # overwritten by load_weights: no random draw wasted


def build_network(
    coefs: Sequence[np.ndarray], intercepts: Sequence[np.ndarray], activation: str,
    backend: Backend, dtype: str,
) -> Sequential:
    """A Sequential (Linear, activation, ..., Linear) on ``backend`` holding these weights."""
    layers: list[Module] = []
    last = len(coefs) - 1
    for i, coef in enumerate(coefs):
        fan_in, fan_out = coef.shape
        layers.append(Linear(fan_in, fan_out, init=_zeros, dtype=dtype, backend=backend))
        hidden = _LAYERS[activation]
        if i < last and hidden is not None:
            layers.append(hidden())
    model = Sequential(*layers)
    load_weights(model, coefs, intercepts)
    return model


def linear_layers(model: Sequential) -> list[Linear]:
    """The network's Linear layers, input to output."""
    return [m for m in model.children() if isinstance(m, Linear)]


def load_weights(model: Sequential, coefs: Sequence[np.ndarray],
                 intercepts: Sequence[np.ndarray]) -> None:
    """Copy scikit-learn's (n_in, n_out) weights and intercepts into the network, in place
    (an optimizer's views of the parameters stay valid)."""
    names = [name for name, _ in model.named_parameters()]
    values = [a for coef, b in zip(coefs, intercepts, strict=True) for a in (coef.T, b)]
    state = dict(zip(names, values, strict=True))
    model.load_state_dict(state)


def read_weights(model: Sequential) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The network's weights as scikit-learn holds them: host (n_in, n_out) C-contiguous
    copies, and the intercepts (one host read per array)."""
    coefs, intercepts = [], []
    for layer in linear_layers(model):
        coefs.append(np.ascontiguousarray(to_numpy(layer.weight.data).T))
        assert layer.bias is not None
        intercepts.append(np.array(to_numpy(layer.bias.data), copy=True))
    return coefs, intercepts


_HIDDEN_PASSES: dict[str, tuple[Any, Any] | None] = {
    "identity": None, "logistic": (sigmoid, sigmoid_backward), "tanh": (tanh, tanh_backward),
    "relu": (relu, relu_backward),
}


class TrainingPasses:
    """scikit-learn's forward and backward passes over a network's Linear layers, set up once
    per fit: what a batch's step calls and nothing more (a small data set's epoch is made of
    its steps' fixed costs as much as of their products).

    ``forward(x)`` is scikit-learn's ``_forward_pass``: [x, a₁, …, a_{L−1}, z_L], the batch x
    (B, n_in), each hidden layer's activations aᵢ = f(a_{i−1} Wᵢᵀ + bᵢ) and the output layer's
    pre-activations z_L (B, n_out). Each pre-activation is a new array that nothing else holds,
    so the ReLU runs in place on NumPy (as scikit-learn's ``inplace_relu``).

    ``backward(values, δ)`` is its ``_backprop`` from δ = ∂L/∂z_L: every layer's
    ∂L/∂Wᵢ = δᵢᵀ a_{i−1} and ∂L/∂bᵢ = Σ δᵢ *assigned* as the parameters' gradients (each
    step's backward writes all of them: nothing to zero first), with
    δ_{i−1} = δᵢ Wᵢ ⊙ f′(a_{i−1}); no ∂L/∂x. Once an optimizer has packed the parameters into
    an arena, and where the library writes a product into an array (NumPy, CuPy, PyTorch), the
    gradients are the arena's flat-buffer views, overwritten in place step after step, where
    the optimizer's flat path reads them; elsewhere (JAX, array-api-strict; the L-BFGS fit,
    which has no optimizer of ours) new arrays. δᵢ Wᵢ is a new array, so on NumPy the ReLU's
    mask multiplies it in place.

    ``penalize(c)``, after a backward, adds c Wᵢ to each weight's gradient (the L2 penalty's,
    c = α/S) and returns Σᵢ ‖Wᵢ‖² (not the intercepts), a 0-d array, as scikit-learn sums it.
    """

    def __init__(self, layers: Sequence[Linear], activation: str, xp: Namespace) -> None:
        self.layers = list(layers)
        self.xp = xp
        self._hidden = _HIDDEN_PASSES[activation]
        self._relu_in_place = activation == "relu" and into_kernels(xp).native

    def forward(self, x: Array) -> list[Array]:
        xp, hidden = self.xp, self._hidden
        values = [x]
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            assert layer.bias is not None
            z = linear(values[-1], layer.weight.data, layer.bias.data, xp=xp)
            if i < last and hidden is not None:
                z = positive_part(z, xp, in_place=True) if self._relu_in_place else hidden[0](
                    z, xp=xp)
            values.append(z)
        return values

    def backward(self, values: Sequence[Array], delta: Array) -> None:
        xp, hidden = self.xp, self._hidden
        for i in range(len(self.layers) - 1, -1, -1):
            weight, bias = self.layers[i].weight, self.layers[i].bias
            assert bias is not None
            a = values[i]
            dx, dW, db = linear_backward(delta, a, weight.data, input_grad=i > 0, xp=xp,
                                         weight_grad_out=weight.grad_buffer,
                                         bias_grad_out=bias.grad_buffer)
            weight.grad, bias.grad = dW, db
            if dx is None:
                break
            if hidden is None or (self._relu_in_place and masked_into(dx, a > 0.0, dx, ..., xp)):
                delta = dx
            else:
                delta = hidden[1](dx, a, xp=xp)

    def penalize(self, c: float) -> Array:
        xp = self.xp
        total: Array | None = None
        for layer in self.layers:
            W = layer.weight.data
            squares = inner(W, W, xp)
            total = squares if total is None else total + squares
            layer.weight.grad += c * W  # in place into the flat buffer where it is one
        assert total is not None
        return total


def forward(x: Array, weights: Sequence[tuple[Array, Array]], activation: str, output: str,
            xp: Namespace) -> Array:
    """The network's output activations for x (n, n_in), from weights on x's device.

    ``weights`` holds (Wᵀ, b) per layer: Wᵀ of shape (n_out, n_in) (a transposed view of
    scikit-learn's coefficient matrix), so each layer is ``linear(a, Wᵀ, b) = a @ coef + b``.
    """
    hidden = {"identity": None, "logistic": sigmoid, "tanh": tanh, "relu": relu}[activation]
    a = x
    last = len(weights) - 1
    for i, (w, b) in enumerate(weights):
        a = linear(a, w, b, xp=xp)
        if i < last and hidden is not None:
            a = hidden(a, xp=xp)
    if output == "softmax":
        return softmax(a, axis=-1, xp=xp)
    if output == "logistic":
        return sigmoid(a, xp=xp)
    if output == "exp":
        return xp.exp(a)
    return a
