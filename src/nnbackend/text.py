"""Character-level language models: validation bits per character, and sampling text.

A language model maps ids (N, T) to logits (N, T, V): position t's logits score the id at
t + 1 (:class:`~nnbackend.layers.TransformerLM`, or :func:`nnbackend.models.char_lstm`).

- :func:`bits_per_character`: −(1/M) Σ log₂ p(target), over the M targets of
  :func:`nnbackend.data.sequence_windows` (every character of a validation split predicted
  once); the losses stay on the device and are read once, at the end.
- :func:`generate`: ``tokens`` ids after a prompt, one at a time, each drawn from
  softmax(z / τ) of the last position's logits (τ = ``temperature``; τ = 0 takes the arg-max:
  greedy decoding) by a NumPy generator seeded with ``seed``, the prompt cropped to the last
  ``context`` ids the model takes. One host read of V logits per generated id: sampling is
  an edge of the library, as printing is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ._checks import check_int
from ._typing import Array
from .backend import to_numpy
from .datasets import Vocabulary
from .functional.losses import cross_entropy
from .layers.module import Module

__all__ = ["bits_per_character", "generate"]


def bits_per_character(model: Module, windows: Iterable[tuple[Array, Array]]) -> float:
    """Mean bits per character, −(1/M) Σₘ log₂ softmax(zₘ)[yₘ], of ``model`` on ``windows``.

    ``windows`` yields ids ``(x, y)`` of shape (n, t) (:func:`nnbackend.data.sequence_windows`:
    windows of different lengths are fine); M counts every target. The model runs in eval mode
    (every module's mode is restored afterwards).

    Raises
    ------
    ValueError
        ``windows`` yields nothing.
    FloatingPointError
        The result is not finite (NaN logits: ids out of range on an accelerator, say).
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    sums: list[Array] = []
    count = 0
    try:
        for x, y in windows:
            logits = model(x)
            loss, _ = cross_entropy(logits, y, reduction="sum")
            sums.append(loss)
            count += math.prod(y.shape)
    finally:
        for module, training in modes:
            object.__setattr__(module, "training", training)
    if not sums:
        msg = "bits_per_character: the windows held nothing to predict"
        raise ValueError(msg)
    from array_api_compat import array_namespace

    total = float(to_numpy(array_namespace(sums[0]).stack(sums)).astype(np.float64).sum())
    bits = total / count / math.log(2.0)
    if not math.isfinite(bits):
        msg = f"bits_per_character: the loss is {bits} over {count} targets"
        raise FloatingPointError(msg)
    return bits


def generate(
    model: Module,
    vocabulary: Vocabulary,
    prompt: str,
    tokens: int,
    *,
    temperature: float = 1.0,
    seed: int | None = 0,
    context: int | None = None,
) -> str:
    """The text ``model`` continues ``prompt`` with: ``tokens`` characters, sampled.

    Parameters
    ----------
    model : Module
        Ids (1, t) → logits (1, t, V), V = ``len(vocabulary)``.
    vocabulary : Vocabulary
        Encodes the prompt (characters it does not know become the unknown id 0) and decodes
        what is generated (id 0 as U+FFFD).
    prompt : str
        At least one character.
    tokens : int
        How many characters to generate (≥ 0).
    temperature : float
        τ ≥ 0: each id is drawn from softmax(z / τ); τ = 0 is greedy (the arg-max, the lowest
        id among ties), and then ``seed`` does not matter.
    seed : int, optional
        Of the NumPy generator that draws the ids (None: fresh entropy).
    context : int, optional
        The most ids the model is given: the prompt and what is generated are cropped to the
        last ``context`` ids before each step. Default: the model's ``context`` attribute (a
        TransformerLM's positional table), else no cropping.

    Returns
    -------
    str
        The generated characters only (without the prompt).
    """
    check_int(tokens, what="generate: tokens")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or \
            not 0.0 <= temperature < math.inf:
        msg = f"generate: temperature must be a finite number >= 0, got {temperature!r}"
        raise ValueError(msg)
    if not isinstance(prompt, str) or not prompt:
        msg = f"generate: the prompt must be a non-empty string, got {prompt!r}"
        raise ValueError(msg)
    if context is None:
        context = getattr(model, "context", None)
    if context is not None:
        check_int(context, what="generate: context", minimum=1)
    backend = model.backend
    if backend is None:
        msg = "generate: the model has no parameters to take a backend from"
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    ids = [int(i) for i in vocabulary.encode(prompt)]
    out: list[int] = []
    index_dtype = backend.index_dtype
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        for _ in range(tokens):
            window = ids if context is None else ids[-context:]
            x = backend.asarray(np.asarray([window], dtype=np.int64), dtype=index_dtype)
            logits = to_numpy(model(x)[0, -1, :]).astype(np.float64)
            if logits.shape != (len(vocabulary),):
                msg = (f"generate: the model gives {logits.shape[0]} logits per position; the "
                       f"vocabulary has {len(vocabulary)} ids")
                raise ValueError(msg)
            token = _draw(logits, temperature, rng)
            ids.append(token)
            out.append(token)
    finally:
        for module, training in modes:
            object.__setattr__(module, "training", training)
    return vocabulary.decode(out)


def _draw(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """One id: the arg-max (τ = 0), else a draw from softmax(z / τ) (in float64)."""
    if not np.isfinite(logits).all():
        msg = "generate: the model's logits are not finite"
        raise FloatingPointError(msg)
    if temperature == 0.0:
        return int(np.argmax(logits))
    # Shift before dividing: z − max(z) ≤ 0, so a tiny τ sends the others to −∞ (exp: 0) and
    # keeps the maximum at 0 (exp: 1), where z / τ − max(z / τ) would be inf − inf = NaN.
    with np.errstate(over="ignore"):
        z = (logits - logits.max()) / temperature
    p = np.exp(z)
    p /= p.sum()
    return int(rng.choice(len(p), p=p))
