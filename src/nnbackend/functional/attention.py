"""Scaled dot-product attention and its backward pass (Array API only), as PyTorch's
``torch.nn.functional.scaled_dot_product_attention``.

Shapes: query q (..., L, E), key k (..., S, E), value v (..., S, Ev) with the same leading
(batch, head) axes; the output o has shape (..., L, Ev)::

    Z = (q · s) kᵀ + B           (..., L, S)   s = ``scale``, 1/√E by default; B the mask bias
    P = softmax(Z) along S       (rows that keep no key: P = 0, see below)
    A = dropout(P, dropout_p)    (P itself when dropout_p = 0)
    o = A v                      (..., L, Ev)

Masks (PyTorch's polarity for this function): a boolean ``attn_mask`` marks the pairs that
*take part* (True: query i may attend to key j), so B = 0 there and −∞ elsewhere; a floating
``attn_mask`` is B itself (added to the scores; −∞ entries mask). ``is_causal=True`` is the
lower-triangular boolean mask j ≤ i (aligned at the top left, as PyTorch's, also for L ≠ S);
it cannot be combined with an explicit mask (PyTorch refuses that too). A mask broadcasts
against the scores (..., L, S) without enlarging them: (L, S), (N, 1, L, S), (N, H, L, S), ...

Fully masked rows: a query whose keys are all masked (every B = −∞ in its row) attends to
nothing: its output row is 0 and it passes no gradient (to q, k or v). PyTorch's math path
gives NaN there (0/0 in the softmax); zeros are what the padding use asks for (a padded query
contributes nothing), and no NaN ever enters the parameters' gradients.

The softmax is the stable one: the row maximum (of the unmasked scores) is subtracted before
``exp``; a row whose maximum is −∞ is shifted by 0 instead, so its exponentials are all 0 and
its normaliser is replaced by 1. Dropout draws its mask from an
:class:`nnbackend.random.Generator` (as :func:`nnbackend.functional.dropout`): the same state
gives the same mask on every backend, with no host transfer.

Backward, with δ = ∂L/∂o and, optionally, ∂L/∂A (the weights' own gradient, when a caller
returned them) added to the first product::

    ∂L/∂v = Aᵀ δ,   ∂L/∂A = δ vᵀ (+ ∂L/∂A given),   ∂L/∂P = dropout_backward(∂L/∂A)
    ∂L/∂Z = P ⊙ (∂L/∂P − D),   D_i = Σⱼ (∂L/∂P)ᵢⱼ Pᵢⱼ = δᵢ · oᵢ (+ Σⱼ (∂L/∂A given)ᵢⱼ Aᵢⱼ)
    ∂L/∂q = s · ∂L/∂Z k,   ∂L/∂k = ∂L/∂Zᵀ (q · s)

D is computed from the output (δᵢ · oᵢ, a dot product of Ev values per row, FlashAttention's
trick) instead of a pass over the (L, S) scores. No gradient flows to the mask.

Conventions of this module (as conv's and batch norm's): :func:`scaled_dot_product_attention`
returns o; :func:`scaled_dot_product_attention_forward` returns ``(o, saved)``, where ``saved``
(an :class:`AttentionSaved`) holds what :func:`scaled_dot_product_attention_backward`
``(dy, saved) -> (dq, dk, dv)`` needs, and the attention weights A (``saved.weights``).

Cost: the (..., L, S) scores are made once and softmaxed in place (the exponential too, on
NumPy); the forward makes one array of that size, the backward one more. Both take ``out=``
arrays (strided views of a caller's buffer: MultiheadAttention's merged-heads and packed
q/k/v-gradient layouts) that NumPy's matmul writes into. On JAX the scores-and-softmax and
the backward are each one compiled kernel (:func:`nnbackend._native.fused`).

Differences from PyTorch: the leading axes of q, k and v must be equal (PyTorch's math path
broadcasts them); ``enable_gqa`` is not offered; a floating mask gets no gradient; fully masked
rows give zeros instead of NaN (above).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import array_api_compat

from .._checks import check_probability
from .._native import fused, maximizer, summer, transposed_operand, ufunc_into
from .._typing import Array, Namespace
from ..random import Generator
from .dropout import dropout, dropout_backward

__all__ = [
    "AttentionSaved",
    "scaled_dot_product_attention",
    "scaled_dot_product_attention_backward",
    "scaled_dot_product_attention_forward",
]

_WHERE = "scaled_dot_product_attention"
_STATIC = ("scale", "causal", "xp")


class AttentionSaved(NamedTuple):
    """What the backward pass needs from the forward pass of scaled dot-product attention."""

    query: Array
    """q · s (..., L, E): the scaled queries the scores were made from."""
    key: Array
    """k (..., S, E)."""
    value: Array
    """v (..., S, Ev)."""
    probs: Array
    """P (..., L, S): the softmax, before dropout (rows of fully masked queries are 0)."""
    weights: Array
    """A (..., L, S): the weights applied to v (P after dropout; P itself without)."""
    mask: Array | None
    """The dropout mask (boolean, A's shape), or None without dropout."""
    dropout_p: float
    scale: float
    output: Array
    """o (..., L, Ev)."""


def scaled_dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    attn_mask: Array | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    *,
    generator: Generator | None = None,
    xp: Namespace | None = None,
) -> Array:
    """o = softmax((q · s) kᵀ + B) v, as ``torch.nn.functional.scaled_dot_product_attention``.

    Parameters
    ----------
    query, key, value : array
        (..., L, E), (..., S, E), (..., S, Ev), one floating dtype, equal leading axes.
    attn_mask : array, optional
        Boolean (True: the pair takes part) or floating (added to the scores), broadcasting
        against (..., L, S) without enlarging it.
    dropout_p : float
        Dropout probability on the attention weights (applied whenever > 0, as PyTorch's
        function does: a layer passes 0 in evaluation mode).
    is_causal : bool
        Mask the pairs j > i (query i attends to keys 0..i); not with ``attn_mask``.
    scale : float, optional
        The factor of the scores; 1/√E by default.
    generator : nnbackend.random.Generator, optional
        The dropout mask's stream; required when ``dropout_p > 0``.
    xp : namespace, optional
        The arrays' namespace (looked up when omitted).

    Returns
    -------
    array
        o (..., L, Ev). A query whose keys are all masked gets a zero row (PyTorch: NaN).
    """
    return scaled_dot_product_attention_forward(
        query, key, value, attn_mask, dropout_p, is_causal, scale, generator=generator,
        xp=xp)[0]


def scaled_dot_product_attention_forward(
    query: Array,
    key: Array,
    value: Array,
    attn_mask: Array | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    *,
    generator: Generator | None = None,
    xp: Namespace | None = None,
    out: Array | None = None,
) -> tuple[Array, AttentionSaved]:
    """:func:`scaled_dot_product_attention` returning ``(o, saved)`` for the backward pass.

    ``saved.weights`` holds the attention weights A (..., L, S) (after dropout). ``out``
    (optional, o's shape and dtype: a strided view of a caller's buffer, say) receives o where
    the library can write a product into it (NumPy); o is then ``out`` itself.
    """
    xp = xp or array_api_compat.array_namespace(query, key, value)
    p = check_probability(dropout_p, caller=_WHERE, name="dropout_p") if dropout_p else 0.0
    s = _check_inputs(query, key, value, attn_mask, is_causal, scale, xp)
    if p and not isinstance(generator, Generator):
        msg = (f"{_WHERE}: dropout_p={p} needs generator= (an nnbackend.random.Generator), "
               f"got {type(generator).__name__}")
        raise TypeError(msg)
    qs, probs = fused(_scores_kernel, xp, static=_STATIC)(
        query, key, attn_mask, scale=s, causal=is_causal, xp=xp)
    weights, mask = probs, None
    if p:
        assert generator is not None
        weights, mask = dropout(probs, p, generator=generator, xp=xp)
    o = _product(weights, value, out, xp)
    return o, AttentionSaved(qs, key, value, probs, weights, mask, p, s, o)


def scaled_dot_product_attention_backward(
    dy: Array,
    saved: AttentionSaved,
    dweights: Array | None = None,
    *,
    xp: Namespace | None = None,
    out: tuple[Array, Array, Array] | None = None,
) -> tuple[Array, Array, Array]:
    """``(dq, dk, dv)``: the gradients of q, k and v given δ = ∂L/∂o (..., L, Ev).

    ``dweights`` (optional, broadcasting against (..., L, S)) is a gradient of the weights
    A = ``saved.weights`` themselves, for a caller that returned them (as
    ``MultiheadAttention(need_weights=True)`` does). Fully masked rows give zero gradients.
    ``out`` (optional: three arrays of q's, k's and v's shapes, views of one buffer, say)
    receives the gradients where the library can write products into them (NumPy); each
    returned gradient is then its ``out`` array.
    """
    xp = xp or array_api_compat.array_namespace(dy, saved.output)
    if tuple(dy.shape) != tuple(saved.output.shape):
        msg = (f"{_WHERE}_backward: dy has shape {tuple(dy.shape)}, the output had "
               f"{tuple(saved.output.shape)}")
        raise ValueError(msg)
    dq_out, dk_out, dv_out = (None, None, None) if out is None else out
    kernel = fused(_backward_kernel, xp, static=("p", "scale", "xp"))  # JAX: compiled once
    return kernel(dy, saved.query, saved.key, saved.value, saved.probs,
                  saved.weights, saved.output, dweights, saved.mask, dq_out, dk_out, dv_out,
                  p=saved.dropout_p, scale=saved.scale, xp=xp)


def _scores_kernel(query: Array, key: Array, attn_mask: Array | None, *, scale: float,
                   causal: bool, xp: Namespace) -> tuple[Array, Array]:
    """(q · s, P): the scaled queries and the masked softmax of their scores (on JAX one
    compiled kernel: :func:`nnbackend._native.fused`)."""
    qs = query * scale
    scores = qs @ transposed_operand(key, xp)
    bias = _bias(attn_mask, causal, tuple(scores.shape[-2:]), query, xp)
    if bias is not None:
        scores += bias  # a fresh array: masked in place (rebound on JAX)
    return qs, _softmax_rows(scores, xp)


def _backward_kernel(
    dy: Array, qs: Array, k: Array, v: Array, probs: Array, weights: Array, output: Array,
    dweights: Array | None, mask: Array | None, dq_out: Array | None, dk_out: Array | None,
    dv_out: Array | None, *, p: float, scale: float, xp: Namespace,
) -> tuple[Array, Array, Array]:
    """(dq, dk, dv): the module docstring's backward (the products written into the
    ``*_out`` arrays where given and the library can)."""
    dv = _product(xp.matrix_transpose(weights), dy, dv_out, xp)
    dA = dy @ transposed_operand(v, xp)
    rowdot = xp.vecdot(dy, output)[..., None]  # Σⱼ (∂L/∂P)ᵢⱼ Pᵢⱼ = δᵢ · oᵢ
    if dweights is not None:
        dA += dweights
        rowdot += summer(xp)(dweights * weights, axis=-1, keepdims=True)
    dP = dropout_backward(dA, mask, p, xp=xp) if mask is not None else dA
    dP -= rowdot  # dP is ours (a product or dropout's fresh array): in place
    dP *= probs
    dq = _product(dP, k, dq_out, xp)
    dq *= scale
    dk = _product(xp.matrix_transpose(dP), qs, dk_out, xp)
    return dq, dk, dv


# ------------------------------------------------------------------------------------------
# Helpers


def _softmax_rows(z: Array, xp: Namespace) -> Array:
    """softmax along the last axis, in place in ``z``; rows of −∞ only give 0 (not NaN)."""
    m = maximizer(xp)(z, axis=-1, keepdims=True)
    # A fully masked row has maximum −∞: shift it by 0, so exp gives 0 there, not exp(NaN).
    m = xp.where(m == -math.inf, xp.zeros_like(m), m)
    z -= m
    e = z if ufunc_into("exp", z, out=z, xp=xp) else xp.exp(z)  # in place where it can
    total = summer(xp)(e, axis=-1, keepdims=True)
    # Every other row sums to at least 1 (its maximum's exp(0)); an empty row divides by 1.
    total = xp.where(total == 0.0, xp.ones_like(total), total)
    e /= total
    return e


def _product(a: Array, b: Array, out: Array | None, xp: Namespace) -> Array:
    """a @ b, written into ``out`` where given and the library can (then ``out`` itself)."""
    if out is not None and ufunc_into("matmul", a, b, out=out, xp=xp):
        return out
    return a @ b


def _bias(
    attn_mask: Array | None, is_causal: bool, size: tuple[int, int], like: Array, xp: Namespace
) -> Array | None:
    """The additive mask B: 0 where a pair takes part, −∞ where it does not (or the floating
    mask as given), in ``like``'s dtype and on its device; None without a mask."""
    if is_causal:
        device = array_api_compat.device(like)
        rows = xp.arange(size[0], device=device)[:, None]
        cols = xp.arange(size[1], device=device)[None, :]
        attn_mask = cols <= rows
    if attn_mask is None:
        return None
    if attn_mask.dtype == xp.bool:
        zero = xp.zeros((), dtype=like.dtype, device=array_api_compat.device(like))
        return xp.where(attn_mask, zero, zero - math.inf)
    return attn_mask


def _check_inputs(
    query: Array, key: Array, value: Array, attn_mask: Array | None, is_causal: bool,
    scale: float | None, xp: Namespace,
) -> float:
    """Raise for inputs PyTorch refuses (or this function does); return the scale."""
    q, k, v = (tuple(a.shape) for a in (query, key, value))
    if len(q) < 2 or len(k) < 2 or len(v) < 2:
        msg = (f"{_WHERE}: query, key and value must have at least 2 axes (..., L, E), "
               f"(..., S, E), (..., S, Ev); got shapes {q}, {k}, {v}")
        raise ValueError(msg)
    if q[-1] != k[-1] or k[-2] != v[-2] or not q[:-2] == k[:-2] == v[:-2]:
        msg = (f"{_WHERE}: expected query (..., L, E), key (..., S, E) and value (..., S, Ev) "
               f"with the same leading axes, E and S; got shapes {q}, {k}, {v}")
        raise ValueError(msg)
    if k[-2] == 0:
        msg = f"{_WHERE}: no keys (S = 0): key has shape {k}"
        raise ValueError(msg)
    if not (query.dtype == key.dtype == value.dtype) or not xp.isdtype(query.dtype,
                                                                        "real floating"):
        msg = (f"{_WHERE}: query, key and value must share one floating dtype; got "
               f"{query.dtype}, {key.dtype}, {value.dtype}")
        raise TypeError(msg)
    if attn_mask is not None:
        if is_causal:
            msg = (f"{_WHERE}: an explicit attn_mask should not be set when is_causal=True "
                   "(PyTorch refuses it too): pass one or the other")
            raise ValueError(msg)
        _check_mask(attn_mask, (*q[:-1], k[-2]), query.dtype, xp)
    if scale is None:
        return 1.0 / math.sqrt(q[-1]) if q[-1] else 1.0
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        msg = f"{_WHERE}: scale must be a finite real number or None, got {scale!r}"
        raise TypeError(msg)
    return float(scale)


def _check_mask(mask: Array, scores: tuple[int, ...], dtype: Any, xp: Namespace) -> None:
    """The mask is boolean or of the queries' dtype, and broadcasts to the scores' shape."""
    if mask.dtype != xp.bool and mask.dtype != dtype:
        msg = (f"{_WHERE}: attn_mask must be boolean (True: takes part) or of the query's "
               f"dtype {dtype}, got {mask.dtype}")
        raise TypeError(msg)
    shape = tuple(mask.shape)
    fits = len(shape) <= len(scores) and all(
        m in (1, s) for m, s in zip(reversed(shape), reversed(scores), strict=False))
    if not fits:
        msg = (f"{_WHERE}: attn_mask of shape {shape} does not broadcast to the attention "
               f"scores' shape {scores} (..., L, S)")
        raise ValueError(msg)
