"""Ready-made networks: the MLP, the LeNet-style CNNs and the character-level language models
that ``nnbackend train`` builds.

Each builder returns a plain :class:`~nnbackend.layers.Sequential` of built-in layers, so
:func:`nnbackend.layers.describe` records it and :func:`nnbackend.layers.build` (or
:func:`nnbackend.checkpoint.load_model`) rebuilds it from a checkpoint alone: the builders
themselves need no registered kind, and a model they made is an ordinary model (its layers
indexed, its state dict named, as if written out by hand).

The CNN (LeNet-5 with batch normalisation and dropout), for images (N, C, H, W)::

    Conv2d(C, 6, 5, padding=2, bias=False) → BatchNorm2d(6) → act → MaxPool2d(2)
    Conv2d(6, 16, 5, bias=False)           → BatchNorm2d(16) → act → MaxPool2d(2)
    Flatten → Linear(16·h·w, 120) → act → Dropout(p) → Linear(120, 84) → act → Dropout(p)
            → Linear(84, classes)

On 28×28 inputs (MNIST) the maps are 28 → 14 → 10 → 5, and the head is 400 → 120 → 84 → 10:
LeNet. The convolutions have no bias, since the batch normalisation that follows each
subtracts the channel's mean and adds its own β. :func:`cnn_for` sizes the same network to
other images (the rules are in its docstring).

The language models, ids (N, T) → logits (N, T, V): :func:`gpt` (a
:class:`~nnbackend.layers.TransformerLM`, a registered kind that ties its output projection
to its token embedding itself) and :func:`char_lstm`, a Sequential::

    Embedding(V, E) → LSTM(E, H, num_layers, batch_first=True) → RecurrentOutput() → Linear(H, V)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

from ._checks import check_int
from .layers import Dropout, Linear, Module, ReLU, Sequential, Sigmoid, Tanh

__all__ = ["ACTIVATIONS", "char_lstm", "cnn_for", "gpt", "lenet", "mlp"]

ACTIVATIONS: dict[str, type[Module]] = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}
"""The activations the builders take by name; the weights before one are drawn with He's
initialiser for ``"relu"``, Xavier's for the others."""

# Below this size the second convolution is a size-keeping 3×3 instead of LeNet's valid 5×5
# (which would leave a 4×4 map or less: no room for its pooling).
_VALID_5X5_FROM = 8


def _activation(name: str, where: str) -> tuple[type[Module], str]:
    """The activation's class and the initialiser of the weights before it."""
    if name not in ACTIVATIONS:
        msg = f"{where}: activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}"
        raise ValueError(msg)
    return ACTIVATIONS[name], "he" if name == "relu" else "xavier"


def _seeds(seed: int | None) -> Iterator[int | None]:
    """seed, seed + 1, ... for the layers in order (None for each when seed is None)."""
    return itertools.repeat(None) if seed is None else itertools.count(seed)


def mlp(
    widths: Sequence[int],
    *,
    activation: str = "relu",
    dtype: Any = None,
    backend: Any = None,
    seed: int | None = 0,
) -> Sequential:
    """A multilayer perceptron: ``Linear(w₀, w₁) → act → … → Linear(w_{L−1}, w_L)``.

    Parameters
    ----------
    widths : sequence of int
        The widths ``(n_in, hidden..., n_out)``, at least two.
    activation : {"relu", "sigmoid", "tanh"}
        Between the linear layers (none after the last).
    dtype, backend
        Of the parameters (see :class:`~nnbackend.layers.Linear`).
    seed : int or None
        Linear layer ``i`` is drawn with seed ``seed + i``.
    """
    act, init = _activation(activation, "mlp")
    widths = [check_int(w, what="mlp: widths", minimum=1) for w in widths]
    if len(widths) < 2:
        msg = f"mlp: widths needs the input and output widths at least, got {widths}"
        raise ValueError(msg)
    seeds = _seeds(seed)
    layers: list[Module] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        layers.append(Linear(fan_in, fan_out, init=init, dtype=dtype, backend=backend,
                             seed=next(seeds)))
        if i < len(widths) - 2:
            layers.append(act())
    return Sequential(*layers)


def cnn_for(
    image_shape: Sequence[int],
    classes: int,
    *,
    hidden: Sequence[int] = (120, 84),
    activation: str = "relu",
    dropout: float = 0.25,
    dtype: Any = None,
    backend: Any = None,
    seed: int | None = 0,
) -> Sequential:
    """The LeNet-style CNN of this module's docstring, sized to images of ``image_shape``.

    For a (C, H, W) image: the first block keeps H×W (5×5, padding 2) and pools 2×2; the second
    convolution is LeNet's valid 5×5 when the pooled map is at least 8×8, else a 3×3 with
    padding 1 (it keeps the size: 8×8 digits give 8 → 4 → 4 → 2, a head of 16·2·2 = 64); each
    pooling halves (rounding down) only the sides that are at least 2, and is left out when
    neither is. The dense head flattens what is left, ``16·h·w`` features.

    Parameters
    ----------
    image_shape : (C, H, W)
        One image's shape: channels, height, width.
    classes : int
        Outputs (logits) of the last layer.
    hidden : sequence of int
        The hidden widths of the dense head (LeNet's 120, 84); each is followed by the
        activation and dropout.
    activation : {"relu", "sigmoid", "tanh"}
        After every batch normalisation and every hidden dense layer.
    dropout : float
        Probability ``p`` of the head's dropout layers, 0 ≤ p < 1 (0: none). The default 0.25
        was chosen on MNIST 5k (``nnbackend train --dataset mnist5k --model cnn``).
    dtype, backend
        Of the parameters and buffers.
    seed : int or None
        The layers with weights or a random stream get seeds ``seed, seed + 1, ...`` in
        order; None draws every one from the operating system.

    Returns
    -------
    Sequential
        Describable (``nnbackend.layers.describe``) and rebuilt by ``nnbackend.layers.build``.

    Raises
    ------
    ValueError
        A shape that is not three positive sizes, a non-positive width or class count, an
        unknown activation, or ``dropout`` outside [0, 1).
    """
    from .layers import BatchNorm2d, Conv2d, Flatten, MaxPool2d

    shape = tuple(image_shape)
    if len(shape) != 3:
        msg = f"cnn_for: image_shape must be (C, H, W), got {shape}"
        raise ValueError(msg)
    channels, height, width = (check_int(s, what="cnn_for: image_shape", minimum=1)
                               for s in shape)
    check_int(classes, what="cnn_for: classes", minimum=1)
    widths = [check_int(w, what="cnn_for: hidden", minimum=1) for w in hidden]
    act, init = _activation(activation, "cnn_for")
    if not 0.0 <= dropout < 1.0:
        msg = f"cnn_for: dropout must lie in [0, 1), got {dropout!r}"
        raise ValueError(msg)
    seeds = _seeds(seed)
    placed = {"dtype": dtype, "backend": backend}
    layers: list[Module] = []

    def block(c_in: int, c_out: int, kernel: int, padding: int, size: tuple[int, int]
              ) -> tuple[int, int]:
        """conv → BN → act → pool; returns the map's size after it."""
        layers.extend([Conv2d(c_in, c_out, kernel, padding=padding, bias=False, init=init,
                              seed=next(seeds), **placed),
                       BatchNorm2d(c_out, **placed), act()])
        h, w = (s + 2 * padding - kernel + 1 for s in size)
        pool = (2 if h >= 2 else 1, 2 if w >= 2 else 1)
        if pool != (1, 1):
            layers.append(MaxPool2d(pool))
        return h // pool[0], w // pool[1]

    h, w = block(channels, 6, 5, 2, (height, width))
    if min(h, w) >= _VALID_5X5_FROM:
        h, w = block(6, 16, 5, 0, (h, w))
    else:
        h, w = block(6, 16, 3, 1, (h, w))
    layers.append(Flatten())
    head = [16 * h * w, *widths]
    for fan_in, fan_out in itertools.pairwise(head):
        layers.extend([Linear(fan_in, fan_out, init=init, seed=next(seeds), **placed), act()])
        if dropout > 0.0:
            layers.append(Dropout(dropout, seed=next(seeds)))
    layers.append(Linear(head[-1], classes, init=init, seed=next(seeds), **placed))
    return Sequential(*layers)


def lenet(
    classes: int = 10,
    in_channels: int = 1,
    **options: Any,
) -> Sequential:
    """LeNet-5 with batch normalisation and dropout for 28×28 images: ``cnn_for((in_channels,
    28, 28), classes, **options)`` (conv 1→6 5×5 pad 2, BN, act, 2×2 max-pool; conv 6→16 5×5,
    BN, act, 2×2 max-pool; Flatten; 400 → 120 → 84 → classes with dropout).

    Parameters
    ----------
    classes, in_channels : int
        Outputs, and channels of the input images.
    **options
        ``hidden``, ``activation``, ``dropout``, ``dtype``, ``backend``, ``seed``, as
        :func:`cnn_for` takes them.
    """
    return cnn_for((in_channels, 28, 28), classes, **options)



def gpt(
    vocab_size: int,
    *,
    d_model: int = 64,
    nhead: int = 4,
    num_layers: int = 2,
    dim_feedforward: int | None = None,
    context: int = 64,
    dropout: float = 0.0,
    dtype: Any = None,
    backend: Any = None,
    seed: int | None = 0,
) -> Module:
    """The small GPT of ``nnbackend train --model transformer``: a
    :class:`~nnbackend.layers.TransformerLM` (2 layers, d = 64, 4 heads, a feed-forward of
    4d, a positional table of 64 by default), its output projection tied to the token
    embedding."""
    from .layers.language_model import TransformerLM

    return TransformerLM(vocab_size, d_model, nhead, num_layers, dim_feedforward, context,
                         dropout, dtype=dtype, backend=backend, seed=seed)


def char_lstm(
    vocab_size: int,
    *,
    embedding_dim: int = 64,
    hidden_size: int = 256,
    num_layers: int = 1,
    dropout: float = 0.0,
    dtype: Any = None,
    backend: Any = None,
    seed: int | None = 0,
) -> Sequential:
    """The character LSTM of ``nnbackend train --model lstm``: ``Embedding(V, E) →
    LSTM(E, H, num_layers, batch_first=True, dropout) → RecurrentOutput() → Linear(H, V)``
    (logits at every step; ``dropout`` between LSTM layers, as PyTorch's, and none when
    ``num_layers`` is 1). Seeds ``seed, seed + 1, ...`` in order."""
    from .layers import LSTM, Embedding, RecurrentOutput

    seeds = _seeds(seed)
    placed = {"dtype": dtype, "backend": backend}
    return Sequential(
        Embedding(vocab_size, embedding_dim, seed=next(seeds), **placed),
        LSTM(embedding_dim, hidden_size, num_layers, batch_first=True,
             dropout=dropout if num_layers > 1 else 0.0, seed=next(seeds), **placed),
        RecurrentOutput(batch_first=True),
        Linear(hidden_size, vocab_size, seed=next(seeds), **placed))
