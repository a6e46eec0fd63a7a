"""Weight initialisers, drawn on the host from a seeded NumPy Generator.

Each initialiser maps ``(shape, rng) -> numpy.ndarray`` (float64). Layers cast the draw to their
dtype on the host and transfer it once, so the same seed gives bit-identical initial weights on
every backend and device.

For a weight of shape ``(out, in, k1, k2, ...)``, with the receptive field r = k1·k2·… (1 for a
matrix ``(out, in)``), fan_in = in·r and fan_out = out·r (:func:`fans`, as
``torch.nn.init._calculate_fan_in_and_fan_out``):

- He / Kaiming normal (for ReLU):      W ~ N(0, 2 / fan_in)
- Xavier / Glorot uniform (for tanh):  W ~ U(-a, a),  a = sqrt(6 / (fan_in + fan_out))
- LeCun normal:                        W ~ N(0, 1 / fan_in)

A weight with a zero-length axis has nothing to draw: it comes back empty (PyTorch warns and
leaves it alone), instead of a division by a zero fan.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "Initializer",
    "draw",
    "fans",
    "get_initializer",
    "he_normal",
    "host_generator",
    "lecun_normal",
    "normal",
    "standard_normal",
    "torch_linear_weight",
    "uniform",
    "xavier_uniform",
    "zeros",
]

Initializer = Callable[[tuple[int, ...], np.random.Generator], np.ndarray]


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of shape ``(out, in, k1, k2, ...)``.

    fan_in = in · r and fan_out = out · r with the receptive field r = ∏ kᵢ (1 for a matrix
    ``(out, in)``): the number of inputs and outputs each weight connects, as
    ``torch.nn.init._calculate_fan_in_and_fan_out`` computes them.

    Raises
    ------
    ValueError
        For fewer than two axes (a bias has no fan_in), as in PyTorch.
    """
    shape = tuple(shape)
    if len(shape) < 2:
        msg = (
            f"initialisers need a weight of at least two axes (out, in, *kernel) to compute "
            f"fan_in and fan_out, got shape {shape}"
        )
        raise ValueError(msg)
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def _nothing_to_draw(shape: tuple[int, ...]) -> bool:
    """A zero-length axis: the fans may be 0, and there is no value to draw."""
    return math.prod(shape) == 0


def he_normal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """He (Kaiming) normal: N(0, 2 / fan_in), the variance-preserving choice for ReLU."""
    fan_in, _ = fans(shape)
    if _nothing_to_draw(shape):
        return np.zeros(shape)
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)


def xavier_uniform(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Xavier (Glorot) uniform: U(-a, a) with a = sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    if _nothing_to_draw(shape):
        return np.zeros(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def lecun_normal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """LeCun normal: N(0, 1 / fan_in)."""
    fan_in, _ = fans(shape)
    if _nothing_to_draw(shape):
        return np.zeros(shape)
    return rng.normal(0.0, math.sqrt(1.0 / fan_in), size=shape)


def zeros(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """All zeros (biases)."""
    return np.zeros(shape)



def standard_normal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """N(0, 1): PyTorch's initialisation of an embedding table."""
    return rng.standard_normal(shape)


def normal(std: float) -> Initializer:
    """N(0, std²), e.g. GPT-2's N(0, 0.02²) for its embedding tables."""

    def init(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal(shape) * std

    return init


def uniform(bound: float) -> Initializer:
    """U(−bound, bound), e.g. PyTorch's recurrent weights and biases with bound = 1/√H."""

    def init(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-bound, bound, shape)

    return init


def torch_linear_weight(rng: np.random.Generator) -> Initializer:
    """PyTorch's ``nn.Linear`` weight initialiser, ``kaiming_uniform_(a=√5)``: U(−b, b) with
    b = 1/√fan_in, drawn from ``rng`` (a stream a layer shares between its parameters, as
    PyTorch's module does; an initialiser for :class:`Linear`'s ``init=``)."""

    def init(shape: tuple[int, ...], _rng: np.random.Generator) -> np.ndarray:
        bound = 1.0 / math.sqrt(shape[1]) if shape[1] else 0.0
        return rng.uniform(-bound, bound, size=shape)

    return init

_BY_NAME: dict[str, Initializer] = {
    "he": he_normal,
    "kaiming": he_normal,
    "xavier": xavier_uniform,
    "glorot": xavier_uniform,
    "lecun": lecun_normal,
    "zeros": zeros,
}


def get_initializer(init: str | Initializer | Any) -> Initializer:
    """Resolve ``"he"``, ``"xavier"``, ``"lecun"``, ``"zeros"`` or a callable to an initialiser."""
    if callable(init):
        return init  # type: ignore[no-any-return,unused-ignore]
    if isinstance(init, str) and init.lower() in _BY_NAME:
        return _BY_NAME[init.lower()]
    msg = f"unknown init {init!r}; use one of {sorted(_BY_NAME)} or a callable (shape, rng)"
    raise ValueError(msg)


def host_generator(seed: Any, *, where: str) -> np.random.Generator:
    """``numpy.random.default_rng(seed)``, with an error naming ``where`` and the bad seed.

    ``seed`` is None (fresh entropy), a non-negative integer, or anything else NumPy seeds
    from (a sequence of non-negative integers, a ``SeedSequence``); a bool is refused as the
    likely slip it is.
    """
    wanted = "None or a non-negative integer"
    if isinstance(seed, bool):
        msg = f"{where}: seed must be {wanted}, got {seed!r}"
        raise TypeError(msg)
    try:
        return np.random.default_rng(seed)
    except TypeError:
        msg = f"{where}: seed must be {wanted}, got {seed!r} of type {type(seed).__name__}"
        raise TypeError(msg) from None
    except ValueError:
        msg = f"{where}: seed must be {wanted}, got {seed!r}"
        raise ValueError(msg) from None


def draw(
    init: str | Initializer, shape: tuple[int, ...], seed: int | None, *, where: str
) -> np.ndarray:
    """Initial values of ``shape`` on the host, from ``numpy.random.default_rng(seed)``.

    The one draw every backend transfers from, so the same seed gives bit-identical weights
    everywhere; ``where`` names the layer in the error raised for a wrong-shape initialiser.
    """
    values = np.asarray(get_initializer(init)(shape, host_generator(seed, where=where)))
    if values.shape != shape:
        msg = f"{where}: init returned shape {values.shape}, expected {shape}"
        raise ValueError(msg)
    return values
