"""Recurrent networks (Elman RNN, LSTM, GRU) and backpropagation through time (Array API only).

The equations, gate orders and weight layouts are PyTorch's (``torch.nn.RNN``/``LSTM``/``GRU``).
Per step t of one layer and direction, with x_t (N, I) the layer's input, h (N, H) the hidden
state and W_ih (G·H, I), W_hh (G·H, H), b_ih, b_hh (G·H,) its weights (G gates)::

    RNN_TANH (G = 1):  h_t = tanh(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh)
    RNN_RELU (G = 1):  h_t = relu(...)
    LSTM (G = 4, rows i, f, g, o):
        (a_i, a_f, a_g, a_o) = x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh
        i, f, o = σ(a_i), σ(a_f), σ(a_o);  g = tanh(a_g)
        c_t = f ⊙ c_{t−1} + i ⊙ g;         h_t = o ⊙ tanh(c_t)
    GRU (G = 3, rows r, z, n):
        r = σ(W_ir x_t + b_ir + W_hr h_{t−1} + b_hr),  z = σ(W_iz x_t + b_iz + W_hz h_{t−1} + b_hz)
        n = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t−1} + b_hn))
        h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}

Layers stack: layer l > 0 reads the output of layer l − 1 (with inter-layer dropout in
training, not after the last layer). A bidirectional layer runs a second set of weights (the
``_reverse`` ones) from t = T − 1 down to 0 and concatenates both outputs on the feature axis:
(T, N, 2H). The final states h_n (and c_n) are (L·D, N, H), ordered layer by layer, forward
direction first (PyTorch's order).

How the work is laid out
------------------------
- The input projection x_t W_ihᵀ + b (b = b_ih + b_hh, except b_hn for the GRU, which sits
  inside r ⊙ (…)) of every step is one GEMM over the T·N rows, before the loop.
- Each step does one GEMM, h_{t−1} W_hhᵀ (N, G·H), and the gates' elementwise work; the gate
  activations, cell states and hidden states are stored per step. Where the library's arrays
  are mutable views (NumPy, PyTorch, CuPy) the steps run in place: the gates are activated
  inside the projection's buffer, states and gradients are written into their step's slice of
  preallocated buffers, products into reused scratch arrays (NumPy's ``out=`` through
  ``_native.into_kernels``/``matmul_into``: no allocation, no dispatch per step). Elsewhere
  (JAX's immutable arrays, array-api-strict) the same equations run as pure functions, their
  results kept in lists and stacked.
- The sigmoid gates (the LSTM's i, f, o, the GRU's r, z) are accurate to a few ulp for every
  normal result, the tanh gates (g, n) take tanh; never the tanh form ½ tanh(½ a) + ½, which
  cancels to 0 below a ≈ −17 in float32. The pure steps take the library's sigmoid
  (:func:`~nnbackend.functional.sigmoid`: e = exp(−|a|), (1 or e)/(1 + e), seven passes,
  accurate into the subnormals). The LSTM in place keeps its gates in the order (i, f, o, g)
  (weights and biases rows swapped once per call, the gradients' swapped back), so the three
  sigmoid gates are one block of the row and tanh takes the other in place, and its
  projections hold −a for the sigmoid gates (their weight rows negated, which is exact):
  σ(a) = 1 / (1 + exp(−a)) is then three passes, exp, +1, 1/·, exact to a few ulp as long as
  the result is normal, and 0 where it would be subnormal (exp(−a) overflows below
  a ≈ −88.7 in float32), as PyTorch's own sigmoid. That halves the forward's elementwise work
  against the seven-pass sigmoid over the whole row. The GRU activates its whole contiguous
  row with :func:`~nnbackend.functional.sigmoid_into` (its n block's input projection saved
  first).
- Backward through time runs the steps in reverse, each with one GEMM for ∂L/∂h_{t−1} = δ_t
  W_hh, writing the pre-activation gradients δ_t (N, G·H) into a buffer; the weight gradients
  are then one GEMM each over all steps: ∂L/∂W_ih = Σ_t δ_tᵀ x_t, ∂L/∂W_hh = Σ_t δ_tᵀ h_{t−1},
  ∂L/∂b = Σ_t δ_t, and ∂L/∂x = δ W_ih one more.
- On JAX each step's elementwise work is one compiled kernel (``_native.fused``).

Backward per step, with ∂h the total gradient of h_t (from the output and from step t + 1)::

    RNN:   δ = ∂h ⊙ (1 − h_t²)  (tanh)  or  ∂h ⊙ [h_t > 0]  (relu)
    LSTM:  ∂c ← ∂c + ∂h ⊙ o ⊙ (1 − tanh²c_t);  δ_i = ∂c g i(1−i),  δ_f = ∂c c_{t−1} f(1−f),
           δ_g = ∂c i (1−g²),  δ_o = ∂h tanh(c_t) o(1−o);  ∂c_{t−1} = ∂c ⊙ f
           (the four derivatives from the stored gates y as one row, (1 − y)(y + b), b = 1 on
           the g block and 0 elsewhere: y(1 − y) and 1 − y² = (1 − y)(1 + y))
    GRU:   δ_n = ∂h (1−z)(1−n²),  δ_z = ∂h (h_{t−1} − n) z(1−z),
           δ_r = δ_n ⊙ (W_hn h_{t−1} + b_hn) ⊙ r(1−r);
           the recurrent side sees (δ_r, δ_z, δ_n ⊙ r), the input side (δ_r, δ_z, δ_n)
    all:   ∂h_{t−1} = δ^h W_hh (+ ∂h ⊙ z for the GRU)

Conventions of this module
--------------------------
- :func:`rnn` returns PyTorch's value: ``(output, h_n)``, or ``(output, (h_n, c_n))`` for the
  LSTM.
- :func:`rnn_forward` returns ``(output, h_n, c_n, saved)`` (``c_n`` None but for the LSTM);
  :func:`rnn_backward` ``(d_output, dh_n, dc_n, saved)`` (each gradient may be None: no
  gradient reaches that output) returns ``(dx, dh0, dc0, dweights)`` with ``dweights`` a list of
  ``(dW_ih, dW_hh, db_ih, db_hh)`` in the order of ``weights`` (bias gradients None without
  biases; ``dc0`` None but for the LSTM; ``dx`` None when ``input_grad=False``).
- ``weights`` is a sequence of ``(W_ih, W_hh, b_ih, b_hh)``, one per layer and direction, in
  PyTorch's ``_flat_weights`` order: layer 0 forward, layer 0 reverse, layer 1 forward, ...
  (``b_ih`` and ``b_hh`` None for ``bias=False``).
- Layouts: input (T, N, I), or (N, T, I) with ``batch_first``, or (T, I) unbatched; h0, c0
  (L·D, N, H), or (L·D, H) unbatched (never batch first, as PyTorch's).
- Nothing is read back to the host; the arrays in ``saved`` are the forward's own (the output
  is a view of the stored hidden states where the library has views: do not write into it
  before the backward pass).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import array_api_compat

from .._checks import namespace_of
from .._libraries import library_of
from .._native import (
    fused,
    into_kernels,
    masked,
    masked_into,
    matmul_into,
    overflow_ignored,
    summer,
)
from .._typing import Array, Namespace
from ..random import Generator
from .activations import sigmoid, sigmoid_into
from .dropout import dropout, dropout_backward

__all__ = ["MODES", "RecurrentSaved", "rnn", "rnn_backward", "rnn_forward"]

MODES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}
"""The recurrent cells and their number of gates G (weights have G·H rows)."""

Weights = tuple[Array, Array, Array | None, Array | None]


# --------------------------------------------------------------------------------------------
# Gate activations
#
# Sigmoid gates take functional.sigmoid's formula (accurate to a few ulp for any pre-activation:
# a gate of 1e-30 is 1e-30, as PyTorch's), tanh gates tanh. The team's rule (DESIGN.md §4)
# forbids the tanh form ½ tanh(½ a) + ½: one tanh pass for every gate, but 0 below a ≈ −17 in
# float32, a 100 % relative error in a gate that then scales a state.


def _tanh_gate(hidden: int, like: Array, xp: Namespace, *, block: int = 2) -> Array:
    """b (4H,) of the LSTM backward's (1 − y)(y + b): 1 on the g block (block 2 of PyTorch's
    order i, f, g, o; 3 of the in-place order i, f, o, g), 0 on the sigmoid gates."""
    device = array_api_compat.device(like)
    return xp.concat([xp.full((hidden,), float(k == block), dtype=like.dtype, device=device)
                      for k in range(4)])


# --------------------------------------------------------------------------------------------
# One step of each cell, pure functions of arrays (JAX: one compiled kernel; array-api-strict)


def _rnn_step(gx: Array, h: Array, w_hh: Array, *, relu: bool, xp: Namespace) -> Array:
    """h_t = act(gx_t + h_{t−1} W_hhᵀ) (gx holds the input projection and both biases)."""
    a = gx + h @ w_hh.T
    return xp.maximum(a, 0.0) if relu else xp.tanh(a)


def _rnn_step_back(dh: Array, d_out: Array | None, h: Array, w_hh: Array, *, relu: bool,
                   xp: Namespace) -> tuple[Array, Array]:
    """(δ_t, ∂L/∂h_{t−1}) from the gradient reaching h_t (from step t + 1 and the output)."""
    if d_out is not None:
        dh = dh + d_out
    delta = xp.where(h > 0.0, dh, 0.0) if relu else dh * (1.0 - h * h)
    return delta, delta @ w_hh


def _lstm_step(gx: Array, h: Array, c: Array, w_hh: Array, *,
               xp: Namespace) -> tuple[Array, Array, Array, Array]:
    """(gates (i, f, g, o) after their activations, c_t, tanh c_t, h_t)."""
    a = gx + h @ w_hh.T
    n = h.shape[-1]
    i_f = sigmoid(a[:, : 2 * n], xp=xp)
    i, f = i_f[:, :n], i_f[:, n:]
    g, o = xp.tanh(a[:, 2 * n: 3 * n]), sigmoid(a[:, 3 * n:], xp=xp)
    gates = xp.concat([i_f, g, o], axis=1)
    c_new = f * c + i * g
    tc = xp.tanh(c_new)
    return gates, c_new, tc, o * tc


def _lstm_step_back(dh: Array, dc: Array, d_out: Array | None, gates: Array, c_prev: Array,
                    tc: Array, w_hh: Array, tanh_gate: Array, *,
                    xp: Namespace) -> tuple[Array, Array, Array]:
    """(δ_t (N, 4H), ∂L/∂h_{t−1}, ∂L/∂c_{t−1}); the activations' derivatives from their
    outputs y: (1 − y)(y + b), b = 1 on the tanh gate (1 − y²), else 0 (y (1 − y))."""
    if d_out is not None:
        dh = dh + d_out
    n = dh.shape[-1]
    i, f, g, o = (gates[:, k * n: (k + 1) * n] for k in range(4))
    dc = dc + dh * o * (1.0 - tc * tc)
    upstream = xp.concat([dc * g, dc * c_prev, dc * i, dh * tc], axis=1)
    delta = upstream * ((1.0 - gates) * (gates + tanh_gate))
    return delta, delta @ w_hh, dc * f


def _gru_step(gx: Array, h: Array, w_hh: Array, b_hn: Array | None, *,
              xp: Namespace) -> tuple[Array, Array, Array]:
    """(gates (r, z, n) after their activations, W_hn h_{t−1} + b_hn, h_t)."""
    gh = h @ w_hh.T
    n = h.shape[-1]
    rz = sigmoid(gx[:, : 2 * n] + gh[:, : 2 * n], xp=xp)
    r, z = rz[:, :n], rz[:, n:]
    hn = gh[:, 2 * n:] if b_hn is None else gh[:, 2 * n:] + b_hn
    cand = xp.tanh(gx[:, 2 * n:] + r * hn)
    return xp.concat([rz, cand], axis=1), hn, cand + z * (h - cand)


def _gru_step_back(dh: Array, d_out: Array | None, gates: Array, hn: Array, h_prev: Array,
                   w_hh: Array, *, xp: Namespace) -> tuple[Array, Array, Array]:
    """(δ^h_t (N, 3H): the recurrent side's, δ_n (N, H): the input side's n block,
    ∂L/∂h_{t−1})."""
    if d_out is not None:
        dh = dh + d_out
    n = dh.shape[-1]
    r, z, cand = gates[:, :n], gates[:, n: 2 * n], gates[:, 2 * n:]
    d_n = dh * (1.0 - z) * (1.0 - cand * cand)
    d_r = d_n * hn * (r * (1.0 - r))
    d_z = dh * (h_prev - cand) * (z * (1.0 - z))
    delta_h = xp.concat([d_r, d_z, d_n * r], axis=1)
    return delta_h, d_n, delta_h @ w_hh + dh * z


_STATIC = ("relu", "xp")


def _kernel(step: Any, xp: Namespace) -> Any:
    return fused(step, xp, static=_STATIC if step in (_rnn_step, _rnn_step_back) else ("xp",))


# --------------------------------------------------------------------------------------------
# The same steps in place, where arrays are mutable views (NumPy, PyTorch, CuPy): each writes
# into its step's slices of the buffers (NumPy's out= through _native.into_kernels, resolved
# once per loop: no temporary, no copy, no lookup per operation; elsewhere the standard result
# assigned into the slice).


def _product(a: Array, b: Array, out: Array | None, xp: Namespace) -> Array:
    """a @ b, into ``out`` where the library writes products in place."""
    if out is not None and matmul_into(a, b, out, xp):
        return out
    return a @ b


class _Scratch:
    """Work arrays reused by every step of one loop (no per-step allocation on NumPy)."""

    def __init__(self, like: Array, xp: Namespace, *shapes: tuple[int, ...]) -> None:
        device = array_api_compat.device(like)
        self.arrays = [xp.empty(shape, dtype=like.dtype, device=device) for shape in shapes]


def _transposed(w: Array, xp: Namespace) -> Array:
    """wᵀ as a contiguous array: the per-step product h wᵀ runs ~25 % faster on OpenBLAS with a
    contiguous right operand than with the transposed view (measured on (32, 128) @ (128,
    512) float32), and the copy is made once per forward."""
    rows, cols = w.shape
    # A reshape of the transposed view copies in row-major order (``asarray(copy=True)`` would
    # keep NumPy's column-major layout of the view: the same strides as before).
    return xp.reshape(xp.reshape(w.T, (rows * cols,)), (cols, rows))


def _rnn_forward_in_place(gx: Array, hs: _Steps, w_hh: Array, relu: bool, xp: Namespace
                          ) -> Array:
    k = into_kernels(xp)
    w_t = _transposed(w_hh, xp)
    h = hs[0]
    for s in range(gx.shape[0]):
        a = hs[s + 1]
        _product(h, w_t, a, xp)
        a += gx[s, ...]
        if relu:
            k.maximum(a, 0.0, out=a)
        else:
            k.tanh(a, out=a)
        h = a
    return h


def _swap_g_o(a: Array, hidden: int, xp: Namespace, *, negate_sigmoid_rows: bool = False
              ) -> Array:
    """The LSTM's gate rows (axis 0) from PyTorch's order (i, f, g, o) to (i, f, o, g), or
    back (the swap is its own inverse); with ``negate_sigmoid_rows`` the rows of i, f and o
    negated (what the in-place forward's projections take: see ``_lstm_forward_in_place``)."""
    n = hidden
    i_f, g, o = a[: 2 * n, ...], a[2 * n: 3 * n, ...], a[3 * n:, ...]
    if negate_sigmoid_rows:
        i_f, o = -i_f, -o
    return xp.concat([i_f, o, g], axis=0)


def _lstm_forward_in_place(gates: Array, hs: _Steps, cells: _Steps, tanh_cells: _Steps,
                           w_hh: Array, xp: Namespace) -> tuple[Array, Array]:
    """Steps in place, the gates in the order (i, f, o, g): the three sigmoid gates one
    contiguous block of the row, the tanh gate the other (no copy, no wasted pass).

    ``gates`` (T, N, 4H) holds the input projections with the sigmoid gates' rows negated,
    −a_i, −a_f, −a_o, a_g (the weights and bias rows were negated, which is exact), and becomes
    the activations; ``w_hh`` (4H, H) is in the same order and negation. Negated, the sigmoid
    is three passes, σ(a) = 1 / (1 + exp(−a)): a few ulp of relative error for every normal
    result (exp(−a) ≥ 1 for a < 0 is exact to an ulp, and nothing cancels); where the true value
    is subnormal (a < −87.3 in float32) exp(−a) overflows and σ is 0, as PyTorch's own sigmoid.
    The states go into their buffers."""
    k = into_kernels(xp)
    n = hs[0].shape[-1]
    w_t = _transposed(w_hh, xp)
    tmp, product = _Scratch(gates, xp, tuple(gates.shape[1:]), (gates.shape[1], n)).arrays
    h, c = hs[0], cells[0]
    with overflow_ignored():  # exp(−a) = inf below a ≈ −88.7 (float32): σ = 1 / inf = 0
        for s in range(gates.shape[0]):
            g = gates[s, ...]
            g += _product(h, w_t, tmp, xp)
            sig, gg = g[:, : 3 * n], g[:, 3 * n:]
            k.exp(sig, out=sig)
            sig += 1.0
            k.divide(1.0, sig, out=sig)
            k.tanh(gg, out=gg)
            i, f, o = g[:, :n], g[:, n: 2 * n], g[:, 2 * n: 3 * n]
            c_new, tc, h = cells[s + 1], tanh_cells[s], hs[s + 1]
            k.multiply(f, c, out=c_new)
            k.multiply(i, gg, out=product)
            c_new += product
            k.tanh(c_new, out=tc)
            k.multiply(o, tc, out=h)
            c = c_new
    return h, c


def _gru_forward_in_place(gates: Array, hs: _Steps, hn: _Steps, w_hh: Array,
                          b_hn: Array | None, xp: Namespace) -> Array:
    """Steps in place: ``gates`` (T, N, 3H) holds the input projections and becomes the
    activations; W_hn h + b_hn and the states go into their buffers. As the LSTM's: the whole
    row takes the sigmoid (contiguous passes) once the n block's input projection is saved;
    n is then written over its block."""
    k = into_kernels(xp)
    n = hs[0].shape[-1]
    w_t = _transposed(w_hh, xp)
    tmp, product, x_n = _Scratch(gates, xp, tuple(gates.shape[1:]), (gates.shape[1], n),
                                 (gates.shape[1], n)).arrays
    h = hs[0]
    for s in range(gates.shape[0]):
        g = gates[s, ...]
        gh = _product(h, w_t, tmp, xp)
        cand = g[:, 2 * n:]
        m = hn[s]
        if b_hn is None:
            m[...] = gh[:, 2 * n:]
        else:
            k.add(gh[:, 2 * n:], b_hn, out=m)
        x_n[...] = cand
        g += gh  # the n block's sum is not used: overwritten below
        sigmoid_into(g, out=g, scratch=tmp, xp=xp)  # tmp's product is spent (m holds its n)
        k.multiply(g[:, :n], m, out=product)
        x_n += product
        k.tanh(x_n, out=cand)
        h_new = hs[s + 1]
        k.subtract(h, cand, out=h_new)
        h_new *= g[:, n: 2 * n]
        h_new += cand
        h = h_new
    return h


def _rnn_backward_in_place(dh: Array, d_out: Array | None, hs: _Steps, deltas: _Steps,
                           w_hh: Array, relu: bool, xp: Namespace) -> Array:
    k = into_kernels(xp)
    for s in range(deltas.count - 1, -1, -1):
        if d_out is not None:
            dh += d_out[s, ...]
        h, delta = hs[s + 1], deltas[s]
        if relu:
            positive = h > 0.0
            if not masked_into(dh, positive, delta, ..., xp):
                delta[...] = masked(dh, positive, xp)
        else:
            k.multiply(h, h, out=delta)
            delta -= 1.0
            delta *= dh
            delta *= -1.0
        dh = delta @ w_hh
    return dh


def _lstm_backward_in_place(dh: Array, dc: Array, d_out: Array | None, saved: _Direction,
                            deltas: _Steps, w_hh: Array, tanh_gate: Array, xp: Namespace
                            ) -> tuple[Array, Array]:
    """Backward through time in place, the gates (and so δ_t, ``w_hh`` (4H, H) and
    ``tanh_gate``) in the forward's order (i, f, o, g): δ_t into ``deltas``; ``dh`` and ``dc``
    are ours."""
    k = into_kernels(xp)
    assert saved.gates is not None and saved.cells is not None
    assert saved.tanh_cells is not None
    gates, cells, tanh_cells = saved.gates, saved.cells, saved.tanh_cells
    n = dh.shape[-1]
    t1, u, dh_a, dh_b = _Scratch(dh, xp, tuple(dh.shape), (dh.shape[0], 4 * n),
                                 tuple(dh.shape), tuple(dh.shape)).arrays
    for s in range(deltas.count - 1, -1, -1):
        if d_out is not None:
            dh += d_out[s, ...]
        y, tc, c_prev, delta = gates[s], tanh_cells[s], cells[s], deltas[s]
        i, f, o, g = y[:, :n], y[:, n: 2 * n], y[:, 2 * n: 3 * n], y[:, 3 * n:]
        k.multiply(tc, tc, out=t1)  # ∂c += ∂h o (1 − tanh² c)
        t1 -= 1.0
        t1 *= o
        t1 *= dh
        dc -= t1
        k.multiply(dc, g, out=delta[:, :n])
        k.multiply(dc, c_prev, out=delta[:, n: 2 * n])
        k.multiply(dh, tc, out=delta[:, 2 * n: 3 * n])
        k.multiply(dc, i, out=delta[:, 3 * n:])
        k.subtract(1.0, y, out=u)  # (1 − y)(y + b)
        delta *= u
        k.add(y, tanh_gate, out=u)
        delta *= u
        dc *= f
        dh_a, dh_b = dh_b, dh_a  # the product goes where dh is not
        dh = _product(delta, w_hh, dh_a, xp)
    return dh, dc


def _gru_backward_in_place(dh: Array, d_out: Array | None, saved: _Direction,
                           deltas: _Steps, d_input_n: _Steps, w_hh: Array, xp: Namespace
                           ) -> Array:
    k = into_kernels(xp)
    assert saved.gates is not None and saved.hn is not None
    gates, hn_steps, hs = saved.gates, saved.hn, saved.hidden
    n = dh.shape[-1]
    t1, t2, dh_a, dh_b = _Scratch(dh, xp, *[tuple(dh.shape)] * 4).arrays
    for s in range(deltas.count - 1, -1, -1):
        if d_out is not None:
            dh += d_out[s, ...]
        y, hn, h_prev, delta, d_n = gates[s], hn_steps[s], hs[s], deltas[s], d_input_n[s]
        r, z, cand = y[:, :n], y[:, n: 2 * n], y[:, 2 * n:]
        k.multiply(cand, cand, out=t1)  # δ_n = ∂h (1 − z)(1 − n²)
        t1 -= 1.0
        k.subtract(z, 1.0, out=t2)
        t1 *= t2
        k.multiply(dh, t1, out=d_n)
        k.subtract(1.0, r, out=t1)  # δ_r = δ_n (W_hn h + b_hn) r (1 − r)
        t1 *= r
        t1 *= hn
        k.multiply(d_n, t1, out=delta[:, :n])
        k.subtract(1.0, z, out=t1)  # δ_z = ∂h (h_{t−1} − n) z (1 − z)
        t1 *= z
        k.subtract(h_prev, cand, out=t2)
        t2 *= t1
        k.multiply(dh, t2, out=delta[:, n: 2 * n])
        k.multiply(d_n, r, out=delta[:, 2 * n:])
        dh_a, dh_b = dh_b, dh_a  # the product goes where dh is not
        dh_prev = _product(delta, w_hh, dh_a, xp)
        dh *= z
        dh_prev += dh
        dh = dh_prev
    return dh


# --------------------------------------------------------------------------------------------
# Per-step storage


class _Steps:
    """Per-step arrays of one shape: a preallocated buffer written step by step where the
    library's arrays are mutable views (no per-step list, no stacking copy), else a list
    stacked at the end (JAX's arrays are immutable; array-api-strict promises no views)."""

    __slots__ = ("buffer", "count", "items", "xp")

    def __init__(self, steps: int, shape: tuple[int, ...], like: Array, xp: Namespace,
                 views: bool, buffer: Array | None = None) -> None:
        self.xp, self.count = xp, steps
        if buffer is None and views:
            buffer = xp.empty((steps, *shape), dtype=like.dtype,
                              device=array_api_compat.device(like))
        self.buffer = buffer
        self.items: list[Array | None] = [] if views else [None] * steps

    def __setitem__(self, s: int, value: Array) -> None:
        if self.buffer is not None:
            self.buffer[s, ...] = value
        else:
            self.items[s] = value

    def __getitem__(self, s: int) -> Array:
        return self.buffer[s, ...] if self.buffer is not None else self.items[s]

    def stacked(self, start: int = 0, stop: int | None = None) -> Array:
        """Steps start..stop−1 as one (stop − start, ...) array."""
        if self.buffer is not None:
            return self.buffer[start:stop, ...]
        return self.xp.stack(self.items[start:stop], axis=0)


# --------------------------------------------------------------------------------------------
# One layer, one direction


@dataclass
class _Direction:
    """What the backward pass of one layer and direction needs (steps in processing order)."""

    x: Array  # (T, N, I) the input as processed (flipped for the reverse direction)
    hidden: _Steps  # h_0 .. h_T (T + 1 entries)
    gates: _Steps | None  # the gates after their activations (LSTM, GRU)
    cells: _Steps | None  # c_0 .. c_T (LSTM)
    tanh_cells: _Steps | None  # tanh c_1 .. tanh c_T (LSTM)
    hn: _Steps | None  # W_hn h_{t−1} + b_hn (GRU)
    weights: Weights
    reverse: bool


def _flip(a: Array, xp: Namespace) -> Array:
    return xp.flip(a, axis=0)


def _projection(x: Array, w_ih: Array, bias: Array | None, xp: Namespace) -> Array:
    """x_t W_ihᵀ + bias for every step: one GEMM over the T·N rows, (T, N, G·H)."""
    t, n, i = x.shape
    gx = xp.reshape(x, (t * n, i)) @ w_ih.T
    if bias is not None:
        gx += bias  # gx is fresh: in place (rebound on JAX)
    return xp.reshape(gx, (t, n, w_ih.shape[0]))


def _input_bias(mode: str, b_ih: Array | None, b_hh: Array | None, hidden: int,
                xp: Namespace) -> Array | None:
    """The bias folded into the input projection: b_ih + b_hh, but b_hn for the GRU."""
    if b_ih is None or b_hh is None:
        return None
    if mode != "GRU":
        return b_ih + b_hh
    return xp.concat([b_ih[: 2 * hidden] + b_hh[: 2 * hidden], b_ih[2 * hidden:]])


def _direction_forward(
    mode: str, x: Array, h0: Array, c0: Array | None, weights: Weights, reverse: bool,
    xp: Namespace, views: bool,
) -> tuple[Array, Array, Array | None, _Direction]:
    """(output (T, N, H) in time order, h_T, c_T, saved) of one layer and direction."""
    w_ih, w_hh, b_ih, b_hh = weights
    hidden = w_hh.shape[1]
    steps, batch = x.shape[0], x.shape[1]
    if reverse:
        x = _flip(x, xp)
    bias = _input_bias(mode, b_ih, b_hh, hidden, xp)
    hs = _Steps(steps + 1, (batch, hidden), x, xp, views)
    hs[0] = h0
    gates = cells = tanh_cells = hn = None
    c_last = None
    if mode in ("RNN_TANH", "RNN_RELU"):
        gx = _projection(x, w_ih, bias, xp)
        relu = mode == "RNN_RELU"
        if views:
            h = _rnn_forward_in_place(gx, hs, w_hh, relu, xp)
        else:
            step = _kernel(_rnn_step, xp)
            h = h0
            for s in range(steps):
                h = step(gx[s, ...], h, w_hh, relu=relu, xp=xp)
                hs[s + 1] = h
    elif mode == "LSTM":
        assert c0 is not None
        if views:  # the in-place order (i, f, o, g), sigmoid rows negated (see its docstring)
            gx = _projection(x, _swap_g_o(w_ih, hidden, xp, negate_sigmoid_rows=True),
                             None if bias is None else
                             _swap_g_o(bias, hidden, xp, negate_sigmoid_rows=True), xp)
        else:
            gx = _projection(x, w_ih, bias, xp)
        gates = _Steps(steps, (batch, 4 * hidden), x, xp, views, buffer=gx if views else None)
        cells = _Steps(steps + 1, (batch, hidden), x, xp, views)
        tanh_cells = _Steps(steps, (batch, hidden), x, xp, views)
        cells[0] = c0
        if views:
            h, c_last = _lstm_forward_in_place(
                gx, hs, cells, tanh_cells,
                _swap_g_o(w_hh, hidden, xp, negate_sigmoid_rows=True), xp)
        else:
            step = _kernel(_lstm_step, xp)
            h, c = h0, c0
            for s in range(steps):
                g, c, tc, h = step(gx[s, ...], h, c, w_hh, xp=xp)
                gates[s], cells[s + 1], tanh_cells[s], hs[s + 1] = g, c, tc, h
            c_last = c
    else:
        gx = _projection(x, w_ih, bias, xp)
        gates = _Steps(steps, (batch, 3 * hidden), x, xp, views, buffer=gx if views else None)
        hn = _Steps(steps, (batch, hidden), x, xp, views)
        b_hn = None if b_hh is None else b_hh[2 * hidden:]
        if views:
            h = _gru_forward_in_place(gx, hs, hn, w_hh, b_hn, xp)
        else:
            step = _kernel(_gru_step, xp)
            h = h0
            for s in range(steps):
                g, m, h = step(gx[s, ...], h, w_hh, b_hn, xp=xp)
                gates[s], hn[s], hs[s + 1] = g, m, h
    output = hs.stacked(1)
    if reverse:
        output = _flip(output, xp)
    saved = _Direction(x, hs, gates, cells, tanh_cells, hn, weights, reverse)
    return output, h, c_last, saved


def _own(a: Array | None, like: Array, xp: Namespace) -> Array:
    """A copy of ``a`` (or zeros): the in-place loops update it, and it may be the caller's."""
    return xp.zeros_like(like) if a is None else xp.asarray(a, copy=True)


def _direction_backward(
    mode: str, d_out: Array | None, dh_last: Array | None, dc_last: Array | None,
    saved: _Direction, input_grad: bool, xp: Namespace, views: bool,
) -> tuple[Array | None, Array, Array | None, tuple[Array, Array, Array | None, Array | None]]:
    """(∂L/∂x (T, N, I) in time order, ∂L/∂h_0, ∂L/∂c_0, (dW_ih, dW_hh, db_ih, db_hh))."""
    w_ih, w_hh, b_ih, b_hh = saved.weights
    x, hs = saved.x, saved.hidden
    steps, batch, hidden = x.shape[0], x.shape[1], w_hh.shape[1]
    if d_out is not None and saved.reverse:
        d_out = _flip(d_out, xp)
    h0 = hs[0]
    dh = _own(dh_last, h0, xp)
    gates_h = 4 if mode == "LSTM" else 3 if mode == "GRU" else 1
    deltas = _Steps(steps, (batch, gates_h * hidden), x, xp, views)
    dc = None
    d_input_n = None
    if mode in ("RNN_TANH", "RNN_RELU"):
        relu = mode == "RNN_RELU"
        if views:
            dh = _rnn_backward_in_place(dh, d_out, hs, deltas, w_hh, relu, xp)
        else:
            step = _kernel(_rnn_step_back, xp)
            for s in range(steps - 1, -1, -1):
                delta, dh = step(dh, None if d_out is None else d_out[s, ...], hs[s + 1],
                                 w_hh, relu=relu, xp=xp)
                deltas[s] = delta
    elif mode == "LSTM":
        assert saved.gates is not None and saved.cells is not None
        assert saved.tanh_cells is not None
        dc = _own(dc_last, h0, xp)
        if views:  # δ_t in the forward's order (i, f, o, g); swapped back below
            dh, dc = _lstm_backward_in_place(dh, dc, d_out, saved, deltas,
                                             _swap_g_o(w_hh, hidden, xp),
                                             _tanh_gate(hidden, h0, xp, block=3), xp)
        else:
            tanh_gate = _tanh_gate(hidden, h0, xp)
            step = _kernel(_lstm_step_back, xp)
            for s in range(steps - 1, -1, -1):
                delta, dh, dc = step(dh, dc, None if d_out is None else d_out[s, ...],
                                     saved.gates[s], saved.cells[s], saved.tanh_cells[s], w_hh,
                                     tanh_gate, xp=xp)
                deltas[s] = delta
    else:
        assert saved.gates is not None and saved.hn is not None
        d_input_n = _Steps(steps, (batch, hidden), x, xp, views)
        if views:
            dh = _gru_backward_in_place(dh, d_out, saved, deltas, d_input_n, w_hh, xp)
        else:
            step = _kernel(_gru_step_back, xp)
            for s in range(steps - 1, -1, -1):
                delta, d_n, dh = step(dh, None if d_out is None else d_out[s, ...],
                                      saved.gates[s], saved.hn[s], hs[s], w_hh, xp=xp)
                deltas[s], d_input_n[s] = delta, d_n
    rows = steps * batch
    delta_h = xp.reshape(deltas.stacked(), (rows, gates_h * hidden))
    if d_input_n is None:
        delta_x = delta_h
    else:  # the GRU's input side sees δ_n where the recurrent side sees δ_n ⊙ r
        delta_x = xp.concat([delta_h[:, : 2 * hidden],
                             xp.reshape(d_input_n.stacked(), (rows, hidden))], axis=1)
    x2 = xp.reshape(x, (rows, x.shape[2]))
    d_w_ih = delta_x.T @ x2
    d_w_hh = delta_h.T @ xp.reshape(hs.stacked(0, steps), (rows, hidden))
    total = summer(xp)
    d_b_ih = None if b_ih is None else total(delta_x, axis=0)
    if mode == "LSTM" and views:  # the in-place order's rows back to PyTorch's
        w_ih = _swap_g_o(w_ih, hidden, xp)
        d_w_ih, d_w_hh = _swap_g_o(d_w_ih, hidden, xp), _swap_g_o(d_w_hh, hidden, xp)
        d_b_ih = None if d_b_ih is None else _swap_g_o(d_b_ih, hidden, xp)
    d_b_hh = None
    if b_hh is not None:  # the same sums but for the GRU's n block: copied, not recomputed
        d_b_hh = (total(delta_h, axis=0) if d_input_n is not None
                  else xp.asarray(d_b_ih, copy=True))
    dx = None
    if input_grad:
        dx = xp.reshape(delta_x @ w_ih, x.shape)
        if saved.reverse:
            dx = _flip(dx, xp)
    return dx, dh, dc, (d_w_ih, d_w_hh, d_b_ih, d_b_hh)


# --------------------------------------------------------------------------------------------
# The stack of layers


@dataclass
class RecurrentSaved:
    """What :func:`rnn_backward` needs from :func:`rnn_forward` (spent by the backward)."""

    mode: str
    num_layers: int
    num_directions: int
    batch_first: bool
    unbatched: bool
    dropout: float
    directions: list[_Direction] = field(default_factory=list)
    masks: list[Array | None] = field(default_factory=list)  # after each layer but the last
    input_shape: tuple[int, ...] = ()


def _check_mode(mode: str) -> int:
    if mode not in MODES:
        msg = f"rnn: mode must be one of {sorted(MODES)}, got {mode!r}"
        raise ValueError(msg)
    return MODES[mode]


def _check_weights(weights: Sequence[Weights], mode: str, num_layers: int, directions: int,
                   input_size: int) -> int:
    """The hidden size H, once every weight's shape is checked."""
    gates = MODES[mode]
    if len(weights) != num_layers * directions:
        msg = (f"rnn: {num_layers} layer(s) × {directions} direction(s) need "
               f"{num_layers * directions} weight tuples, got {len(weights)}")
        raise ValueError(msg)
    hidden = weights[0][1].shape[1]
    for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(weights):
        width = input_size if k < directions else directions * hidden
        want: dict[str, tuple[int, ...]] = {"W_ih": (gates * hidden, width),
                                            "W_hh": (gates * hidden, hidden)}
        got: dict[str, tuple[int, ...]] = {"W_ih": tuple(w_ih.shape), "W_hh": tuple(w_hh.shape)}
        if b_ih is not None:
            want["b_ih"], got["b_ih"] = (gates * hidden,), tuple(b_ih.shape)
        if b_hh is not None:
            want["b_hh"], got["b_hh"] = (gates * hidden,), tuple(b_hh.shape)
        for name in want:
            if want[name] != got[name]:
                msg = (f"rnn ({mode}): weights[{k}] {name} has shape {got[name]}, expected "
                       f"{want[name]}")
                raise ValueError(msg)
    return int(hidden)


def rnn_forward(
    input: Array,
    hx: Array | tuple[Array, Array] | None,
    weights: Sequence[Weights],
    *,
    mode: str,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    training: bool = True,
    batch_first: bool = False,
    generator: Generator | None = None,
    xp: Namespace | None = None,
) -> tuple[Array, Array, Array | None, RecurrentSaved]:
    """Run a stack of recurrent layers; return ``(output, h_n, c_n, saved)``.

    Parameters
    ----------
    input : array
        (T, N, I), (N, T, I) with ``batch_first``, or (T, I) for one unbatched sequence.
    hx : array, (array, array) or None
        The initial hidden state h0 (L·D, N, H) (or (L·D, H) unbatched); for the LSTM a pair
        (h0, c0); None for zeros.
    weights : sequence of (W_ih, W_hh, b_ih, b_hh)
        One per layer and direction, in PyTorch's order (see the module docstring).
    mode : {"RNN_TANH", "RNN_RELU", "LSTM", "GRU"}
    num_layers, bidirectional, batch_first : as PyTorch's modules.
    dropout : float
        Probability of zeroing an element of each layer's output but the last, in training.
    training : bool
        Whether the dropout applies.
    generator : nnbackend.random.Generator, optional
        The dropout masks' stream (needed when dropout > 0 in training).

    Returns
    -------
    output : array
        (T, N, D·H) (or (N, T, D·H) with ``batch_first``, (T, D·H) unbatched): the last
        layer's hidden states, both directions concatenated.
    h_n, c_n : array
        (L·D, N, H) (or (L·D, H)): the final states; ``c_n`` None but for the LSTM.
    saved : RecurrentSaved
        For :func:`rnn_backward`.
    """
    gates = _check_mode(mode)
    del gates
    xp = namespace_of(input) if xp is None else xp
    directions = 2 if bidirectional else 1
    if input.ndim not in (2, 3):
        msg = f"rnn ({mode}): input must be (T, N, I), (N, T, I) or (T, I), got {input.shape}"
        raise ValueError(msg)
    hidden = _check_weights(weights, mode, num_layers, directions, input.shape[-1])
    unbatched = input.ndim == 2
    x = input[:, None, :] if unbatched else (
        xp.permute_dims(input, (1, 0, 2)) if batch_first else input)
    h0, c0 = _initial_states(hx, mode, num_layers * directions, x.shape[1], hidden, unbatched,
                             x, xp)
    views = library_of(xp).mutable_views
    saved = RecurrentSaved(mode, num_layers, directions, batch_first, unbatched, dropout,
                           input_shape=tuple(input.shape))
    h_last: list[Array] = []
    c_last: list[Array] = []
    layer_input = x
    for layer in range(num_layers):
        outputs = []
        for d in range(directions):
            k = layer * directions + d
            out, h, c, direction = _direction_forward(
                mode, layer_input, h0[k, ...], None if c0 is None else c0[k, ...], weights[k],
                d == 1, xp, views)
            outputs.append(out)
            h_last.append(h)
            if c is not None:
                c_last.append(c)
            saved.directions.append(direction)
        layer_output = outputs[0] if directions == 1 else xp.concat(outputs, axis=2)
        if layer < num_layers - 1:
            mask = None
            if training and dropout > 0.0:
                if generator is None:
                    msg = "rnn: dropout > 0 in training needs a generator"
                    raise ValueError(msg)
                layer_output, mask = _dropout(layer_output, dropout, generator, xp)
            saved.masks.append(mask)
        layer_input = layer_output
    output = layer_input
    h_n = xp.stack(h_last, axis=0)
    c_n = xp.stack(c_last, axis=0) if mode == "LSTM" else None
    if unbatched:
        output, h_n = output[:, 0, :], h_n[:, 0, :]
        c_n = None if c_n is None else c_n[:, 0, :]
    elif batch_first:
        output = xp.permute_dims(output, (1, 0, 2))
    return output, h_n, c_n, saved


def _dropout(x: Array, p: float, generator: Generator, xp: Namespace) -> tuple[Array, Any]:
    return dropout(x, p, generator=generator, xp=xp, training=True)


def _initial_states(
    hx: Any, mode: str, count: int, batch: int, hidden: int, unbatched: bool, like: Array,
    xp: Namespace,
) -> tuple[Array, Array | None]:
    """(h0, c0) as (L·D, N, H) arrays, zeros where not given; shapes checked."""
    shape = (count, hidden) if unbatched else (count, batch, hidden)
    if mode == "LSTM":
        if hx is None:
            h0 = c0 = None
        elif isinstance(hx, tuple) and len(hx) == 2:
            h0, c0 = hx
        else:
            msg = "rnn (LSTM): hx must be a pair (h0, c0) or None"
            raise TypeError(msg)
        states = {"h0": h0, "c0": c0}
    else:
        if isinstance(hx, tuple):
            msg = f"rnn ({mode}): hx must be one array h0 or None, got a tuple"
            raise TypeError(msg)
        states = {"h0": hx}
    out: list[Array | None] = []
    for name, value in states.items():
        if value is None:
            value = xp.zeros(shape, dtype=like.dtype, device=array_api_compat.device(like))
        elif tuple(value.shape) != shape:
            msg = f"rnn ({mode}): {name} has shape {tuple(value.shape)}, expected {shape}"
            raise ValueError(msg)
        out.append(value[:, None, :] if unbatched else value)
    return out[0], (out[1] if len(out) > 1 else None)


def rnn_backward(
    d_output: Array | None,
    dh_n: Array | None,
    dc_n: Array | None,
    saved: RecurrentSaved,
    *,
    input_grad: bool = True,
    xp: Namespace | None = None,
) -> tuple[Array | None, Array, Array | None, list[tuple[Array, Array, Array | None,
                                                          Array | None]]]:
    """Backpropagation through time: ``(dx, dh0, dc0, dweights)``.

    ``d_output``, ``dh_n`` and ``dc_n`` (∂L/∂output, ∂L/∂h_n, ∂L/∂c_n in the forward's
    layouts) may each be None: no gradient flows from there. ``dx`` (the input's layout) is
    None when ``input_grad`` is False; ``dh0``/``dc0`` are ∂L/∂h0 and ∂L/∂c0 ((L·D, N, H),
    ``dc0`` None but for the LSTM); ``dweights`` holds ``(dW_ih, dW_hh, db_ih, db_hh)`` per
    layer and direction, in the order of the forward's ``weights``.
    """
    mode, layers, directions = saved.mode, saved.num_layers, saved.num_directions
    first = saved.directions[0]
    if xp is None:
        xp = namespace_of(first.x)
    views = library_of(xp).mutable_views
    if saved.unbatched:
        d_output = None if d_output is None else d_output[:, None, :]
        dh_n = None if dh_n is None else dh_n[:, None, :]
        dc_n = None if dc_n is None else dc_n[:, None, :]
    elif saved.batch_first and d_output is not None:
        d_output = xp.permute_dims(d_output, (1, 0, 2))
    hidden = first.weights[1].shape[1]
    count = layers * directions
    dh0: list[Array] = [None] * count
    dc0: list[Array] = [None] * count
    dweights: list[Any] = [None] * count
    d_layer = d_output
    for layer in range(layers - 1, -1, -1):
        if layer < layers - 1 and d_layer is not None and saved.masks[layer] is not None:
            d_layer = dropout_backward(d_layer, saved.masks[layer], saved.dropout, xp=xp)
        dx_layer = None
        for d in range(directions):
            k = layer * directions + d
            d_out = None
            if d_layer is not None:
                d_out = d_layer if directions == 1 else d_layer[..., d * hidden:(d + 1) * hidden]
            dx, dh, dc, grads = _direction_backward(
                mode, d_out, None if dh_n is None else dh_n[k, ...],
                None if dc_n is None else dc_n[k, ...], saved.directions[k],
                input_grad or layer > 0, xp, views)
            dh0[k], dc0[k], dweights[k] = dh, dc, grads
            if dx is not None:
                dx_layer = dx if dx_layer is None else dx_layer + dx
        d_layer = dx_layer
    saved.directions.clear()  # spent: the stored states are freed with the closure's last use
    dx = d_layer if input_grad else None
    dh0_all = xp.stack(dh0, axis=0)
    dc0_all = xp.stack(dc0, axis=0) if mode == "LSTM" else None
    if saved.unbatched:
        dx = None if dx is None else dx[:, 0, :]
        dh0_all = dh0_all[:, 0, :]
        dc0_all = None if dc0_all is None else dc0_all[:, 0, :]
    elif saved.batch_first and dx is not None:
        dx = xp.permute_dims(dx, (1, 0, 2))
    return dx, dh0_all, dc0_all, dweights


def rnn(
    input: Array,
    hx: Array | tuple[Array, Array] | None,
    weights: Sequence[Weights],
    *,
    mode: str,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    training: bool = True,
    batch_first: bool = False,
    generator: Generator | None = None,
    xp: Namespace | None = None,
) -> tuple[Array, Any]:
    """PyTorch's return value: ``(output, h_n)``, or ``(output, (h_n, c_n))`` for the LSTM
    (arguments as :func:`rnn_forward`'s)."""
    output, h_n, c_n, _ = rnn_forward(
        input, hx, weights, mode=mode, num_layers=num_layers, bidirectional=bidirectional,
        dropout=dropout, training=training, batch_first=batch_first, generator=generator, xp=xp)
    return output, (h_n if c_n is None else (h_n, c_n))

