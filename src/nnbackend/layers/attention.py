"""``MultiheadAttention``: PyTorch's ``torch.nn.MultiheadAttention`` over
:func:`nnbackend.functional.scaled_dot_product_attention`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import array_api_compat

from .._checks import check_int, check_probability
from .._libraries import library_of
from .._typing import Array, Backprop, Namespace
from ..backend import dtype_name, get_backend
from ..functional.attention import (
    AttentionSaved,
    scaled_dot_product_attention_backward,
    scaled_dot_product_attention_forward,
)
from ..functional.linear import linear, linear_backward
from ..init import host_generator, torch_linear_weight, xavier_uniform
from ..random import Generator
from .linear import Linear
from .module import Context, Module, Parameter

__all__ = ["MultiheadAttention"]


class _Inputs(NamedTuple):
    """One call's inputs, batched: (L, N, E) or (N, L, E) as the layer's layout."""

    query: Array
    key: Array
    value: Array
    key_padding_mask: Array | None
    attn_mask: Array | None
    packed: bool  # one input x: self-attention through one projection GEMM
    unbatched: bool
    arity: int  # the tuple's length (0: a single array)


class MultiheadAttention(Module):
    """Multi-head attention, as ``torch.nn.MultiheadAttention``::

        Q = query W_qᵀ + b_q,  K = key W_kᵀ + b_k,  V = value W_vᵀ + b_v   (split into H heads)
        head_h = softmax(Q_h K_hᵀ / √d + B) V_h,   d = embed_dim / num_heads
        y = concat(head_1, ..., head_H) W_oᵀ + b_o

    with [W_q; W_k; W_v] = ``in_proj_weight`` (3E, E), [b_q; b_k; b_v] = ``in_proj_bias`` (3E,),
    W_o = ``out_proj.weight`` (E, E), b_o = ``out_proj.bias`` (E,): PyTorch's names and
    layouts, so a ``torch.nn.MultiheadAttention`` state dict converted to NumPy loads.

    Parameters
    ----------
    embed_dim, num_heads : int
        E and H; E must be divisible by H.
    dropout : float
        Dropout probability on the attention weights, in training mode.
    bias : bool
        Learn ``in_proj_bias`` and ``out_proj.bias``.
    add_bias_kv, add_zero_attn : bool
        Not supported (refused with a message when True).
    kdim, vdim : int, optional
        The keys' and values' widths: only ``embed_dim`` (or None) is supported.
    batch_first : bool
        Inputs (N, L, E) when True, (L, N, E) when False (PyTorch's default).
    is_causal : bool
        Apply the causal mask (query i attends to keys 0..i) without an ``attn_mask``: this
        layer takes one input, so the flag PyTorch's ``forward`` takes lives here.
    need_weights, average_attn_weights : bool
        Return ``(attn_output, attn_weights)`` instead of ``attn_output`` alone; the weights
        (after dropout, as PyTorch's) averaged over the heads (N, L, S) or per head
        (N, H, L, S). PyTorch's ``forward`` defaults to ``need_weights=True``; here it is a
        constructor flag, False by default, because a layer's output feeds the next one.
    dtype, backend, seed :
        As :class:`Linear`'s: the initial weights are drawn on the host from
        ``numpy.random.default_rng(seed)`` as PyTorch draws them (``in_proj_weight`` Xavier
        uniform, ``out_proj.weight`` U(±1/√E), biases 0); the attention dropout's stream
        (:class:`nnbackend.random.Generator`) is seeded by ``seed`` too.

    Input
    -----
    One array x: self-attention (query = key = value = x), through one (3E, E) projection.
    Or a tuple ``(query, key, value[, key_padding_mask[, attn_mask]])`` (None for an absent
    mask), as PyTorch's ``forward``: query (L, N, E), key and value (S, N, E) (batch_first:
    (N, L, E), (N, S, E); unbatched: (L, E), (S, E)); ``key_padding_mask`` (N, S), boolean with
    True = *ignored* (PyTorch's polarity for this layer) or floating (added); ``attn_mask``
    (L, S) or (N·H, L, S), boolean with True = *not allowed* (PyTorch's polarity for this
    layer) or floating (added). The backward pass returns ∂L/∂x, or a tuple of the tuple's
    length: (dquery, dkey, dvalue, None, None).

    Notes
    -----
    A query whose keys are all masked gets a zero output row before ``out_proj`` (so y = b_o
    there) and passes no gradient; PyTorch gives NaN. The weights' gradient (need_weights)
    flows back through the softmax, as in PyTorch.
    """

    has_training_behaviour = True

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        *,
        is_causal: bool = False,
        need_weights: bool = False,
        average_attn_weights: bool = True,
        dtype: Any = None,
        backend: Any = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        where = "MultiheadAttention"
        self.embed_dim = check_int(embed_dim, what=f"{where}: embed_dim", minimum=1)
        self.num_heads = check_int(num_heads, what=f"{where}: num_heads", minimum=1)
        if self.embed_dim % self.num_heads:
            msg = (f"{where}: embed_dim={self.embed_dim} is not divisible by num_heads="
                   f"{self.num_heads} (each head takes embed_dim // num_heads features)")
            raise ValueError(msg)
        self.head_dim = self.embed_dim // self.num_heads
        self.dropout = check_probability(dropout, caller=where, name="dropout")
        for name, value in (("add_bias_kv", add_bias_kv), ("add_zero_attn", add_zero_attn)):
            if value:
                msg = f"{where}: {name}=True is not supported"
                raise ValueError(msg)
        for name, dim in (("kdim", kdim), ("vdim", vdim)):
            if dim is not None and dim != self.embed_dim:
                msg = (f"{where}: {name}={dim} differs from embed_dim={self.embed_dim}: keys "
                       "and values of another width (separate q/k/v projections) are not "
                       "supported")
                raise ValueError(msg)
        self.batch_first = bool(batch_first)
        self.is_causal = bool(is_causal)
        self.need_weights = bool(need_weights)
        self.average_attn_weights = bool(average_attn_weights)
        be = get_backend(backend)
        dt = be.dtype(dtype)
        e = self.embed_dim
        rng = host_generator(seed, where=where)
        self.in_proj_weight = Parameter(
            be.asarray(xavier_uniform((3 * e, e), rng), dtype=dt, copy=True), "in_proj_weight")
        self.in_proj_bias = Parameter(be.zeros((3 * e,), dtype=dt), "in_proj_bias") \
            if bias else None
        self.out_proj = Linear(e, e, bias=bias, init=torch_linear_weight(rng), dtype=dt,
                               backend=be)
        self.generator = Generator(seed)

    # ------------------------------------------------------------------ description, state

    def config(self) -> dict[str, Any]:
        """Constructor arguments (the seed: the dropout stream's)."""
        return {"embed_dim": self.embed_dim, "num_heads": self.num_heads,
                "dropout": self.dropout, "bias": self.in_proj_bias is not None,
                "batch_first": self.batch_first, "is_causal": self.is_causal,
                "need_weights": self.need_weights,
                "average_attn_weights": self.average_attn_weights,
                "dtype": dtype_name(self.in_proj_weight.dtype), "seed": self.generator.seed}

    def extra_repr(self) -> str:
        flags = [f"dropout={self.dropout}"] if self.dropout else []
        flags += [name for name in ("batch_first", "is_causal", "need_weights")
                  if getattr(self, name)]
        if self.in_proj_bias is None:
            flags.append("bias=False")
        return ", ".join([f"{self.embed_dim}", f"num_heads={self.num_heads}", *flags])

    def get_extra_state(self) -> dict[str, Any]:
        """The attention dropout's random stream (``{"version", "seed", "stream",
        "counter"}``)."""
        return self.generator.state()

    def set_extra_state(self, state: Mapping[str, Any]) -> None:
        self.generator.load_state(state)

    def _reference_array(self) -> Array:
        return self.in_proj_weight.data

    # ------------------------------------------------------------------ inputs

    def check_input(self, x: Any, ctx: Context) -> None:
        self._parse(x, ctx.xp)

    def _parse(self, x: Any, xp: Namespace) -> _Inputs:
        """The inputs as batched arrays, after checking their shapes and dtypes."""
        if not isinstance(x, tuple):
            self._check_sequence(x, "x")
            unbatched = x.ndim == 2
            if unbatched:
                x = xp.expand_dims(x, axis=self._batch_axis)
            return _Inputs(x, x, x, None, None, True, unbatched, 0)
        if not 3 <= len(x) <= 5:
            msg = (f"{self!r}: expected one array (self-attention) or a tuple (query, key, value"
                   f"[, key_padding_mask[, attn_mask]]), got a tuple of {len(x)}")
            raise TypeError(msg)
        query, key, value, kpm, mask = (*x, None, None)[:5]
        for name, a in (("query", query), ("key", key), ("value", value)):
            self._check_sequence(a, name)
        if not query.ndim == key.ndim == value.ndim:
            msg = (f"{self!r}: query, key and value must all be batched or all unbatched, got "
                   f"shapes {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
            raise ValueError(msg)
        unbatched = query.ndim == 2
        if unbatched:
            query, key, value = (xp.expand_dims(a, axis=self._batch_axis)
                                 for a in (query, key, value))
            if kpm is not None:
                kpm = xp.expand_dims(kpm, axis=0)
        b, seq = (0, 1) if self.batch_first else (1, 0)
        n, s = query.shape[b], key.shape[seq]
        if key.shape[b] != n or value.shape[b] != n or value.shape[seq] != s:
            msg = (f"{self!r}: query {tuple(query.shape)}, key {tuple(key.shape)} and value "
                   f"{tuple(value.shape)} need one batch size and keys and values of one "
                   f"length ({self._layout})")
            raise ValueError(msg)
        self._check_mask(kpm, "key_padding_mask", [(n, s)], query.dtype, xp, unbatched)
        h, length = self.num_heads, query.shape[seq]
        self._check_mask(mask, "attn_mask", [(length, s), (n * h, length, s)]
                         if not unbatched else [(length, s), (h, length, s)],
                         query.dtype, xp, False)
        if mask is not None and self.is_causal:
            msg = (f"{self!r}: an attn_mask was given to a layer built with is_causal=True "
                   "(which makes the causal mask itself): give one or the other")
            raise ValueError(msg)
        return _Inputs(query, key, value, kpm, mask, False, unbatched, len(x))

    @property
    def _batch_axis(self) -> int:
        return 0 if self.batch_first else 1

    @property
    def _layout(self) -> str:
        return "(N, L, E)" if self.batch_first else "(L, N, E)"

    def _check_sequence(self, a: Any, name: str) -> None:
        dtype = self.in_proj_weight.dtype
        if not hasattr(a, "shape") or a.ndim not in (2, 3) or a.shape[-1] != self.embed_dim:
            shape = tuple(getattr(a, "shape", ()))
            msg = (f"{self!r}: {name} must have shape {self._layout} or (L, E) with E = "
                   f"{self.embed_dim}, got {shape if hasattr(a, 'shape') else type(a).__name__}")
            raise ValueError(msg)
        if a.dtype != dtype:
            msg = (f"{self!r}: {name} has dtype {dtype_name(a.dtype)}; expected "
                   f"{dtype_name(dtype)}, the dtype of the parameters")
            raise TypeError(msg)

    def _check_mask(self, mask: Any, name: str, shapes: list[tuple[int, ...]], dtype: Any,
                    xp: Namespace, unbatched: bool) -> None:
        if mask is None:
            return
        shape = tuple(mask.shape)
        if shape not in shapes:
            wanted = " or ".join(map(str, [s[1:] for s in shapes] if unbatched else shapes))
            got = shape[1:] if unbatched else shape
            msg = f"{self!r}: {name} must have shape {wanted}, got {got}"
            raise ValueError(msg)
        if mask.dtype != xp.bool and mask.dtype != dtype:
            msg = (f"{self!r}: {name} must be boolean or of the inputs' dtype "
                   f"{dtype_name(dtype)}, got {dtype_name(mask.dtype)}")
            raise TypeError(msg)

    # ------------------------------------------------------------------ the protocol

    def forward_pass(self, x: Any, ctx: Context) -> tuple[Any, Backprop]:
        inputs = self._parse(x, ctx.xp)
        y, attend_back = self.attend(inputs, ctx, keep=True)

        def backprop(dy: Any) -> Any:
            assert attend_back is not None
            return attend_back(dy)

        return y, backprop

    def infer(self, x: Any, ctx: Context) -> Any:
        return self.attend(self._parse(x, ctx.xp), ctx, keep=False)[0]

    def attend(
        self, inputs: _Inputs, ctx: Context, *, keep: bool = True
    ) -> tuple[Any, Backprop | None]:
        """The attention of parsed inputs: ``(y, backprop)`` (``backprop`` None unless
        ``keep``); for containers that hold the layer (the transformer layers)."""
        xp = ctx.xp
        w_in = self.in_proj_weight.data
        b_in = None if self.in_proj_bias is None else self.in_proj_bias.data
        e, h, d = self.embed_dim, self.num_heads, self.head_dim
        lead = tuple(inputs.query.shape[:2])
        # (L, N, ...) -> (N, H, L, d) and back; batch_first (N, L, ...) likewise.
        to_heads = (0, 2, 1, 3) if self.batch_first else (1, 2, 0, 3)
        from_heads = (0, 2, 1, 3) if self.batch_first else (2, 0, 1, 3)
        if inputs.packed:
            qkv = xp.reshape(linear(inputs.query, w_in, b_in), (*lead, 3, h, d))
            q, k, v = (xp.permute_dims(qkv[:, :, i, :, :], to_heads) for i in range(3))
        else:
            q, k, v = (self._project(a, i, xp, to_heads)
                       for i, a in enumerate((inputs.query, inputs.key, inputs.value)))
        bias = self._bias(inputs, tuple(q.shape), xp)
        p = self.dropout if self.training else 0.0
        # Where products can be written into strided views (NumPy), the heads' output goes
        # straight into the merged layout (..., H, d) and the gradients of q, k, v into the
        # packed (..., 3, H, d) one: no transposing copies.
        strided = _strided_products(xp)
        merged_buffer = xp.empty((*lead, h, d), dtype=q.dtype, device=_device(q)) \
            if strided else None
        heads_out = None if merged_buffer is None else xp.permute_dims(merged_buffer, to_heads)
        heads, saved = scaled_dot_product_attention_forward(
            q, k, v, bias, p, self.is_causal and bias is None, None,
            generator=self.generator, xp=xp, out=heads_out)
        if heads_out is not None and heads is heads_out:
            merged = xp.reshape(merged_buffer, (*lead, e))
        else:
            merged = xp.reshape(xp.permute_dims(heads, from_heads), (*lead, e))
        out_proj = self.out_proj
        w_out = out_proj.weight.data
        y = linear(merged, w_out, None if out_proj.bias is None else out_proj.bias.data)
        unbatched, batch_axis = inputs.unbatched, self._batch_axis
        weights = self._returned_weights(saved, unbatched, xp) if self.need_weights else None
        if unbatched:
            y = y[:, 0, :] if batch_axis == 1 else y[0, :, :]
        result = y if weights is None else (y, weights)
        if not keep:
            return result, None
        input_grad = ctx.input_grad

        def backprop(dy: Any) -> Any:
            dweights = None
            if self.need_weights:
                dy, dweights = dy
                if dy is None:
                    dy = xp.zeros_like(y)
            if unbatched:
                dy = xp.expand_dims(dy, axis=batch_axis)
            dmerged = self._out_proj_backward(dy, merged, w_out, xp)
            dheads = xp.permute_dims(xp.reshape(dmerged, (*lead, h, d)), to_heads)
            packed = None
            if strided and inputs.packed:
                packed = xp.empty((*lead, 3, h, d), dtype=dheads.dtype, device=_device(dheads))
            views = None if packed is None else tuple(
                xp.permute_dims(packed[:, :, i, :, :], to_heads) for i in range(3))
            dqkv: tuple[Array, ...] = scaled_dot_product_attention_backward(
                dheads, saved, self._weights_gradient(dweights, unbatched, xp), xp=xp,
                out=views)
            if views is not None and all(g is o for g, o in zip(dqkv, views, strict=True)):
                dqkv = (xp.reshape(packed, (*lead, 3 * e)),)
            grads = self._in_proj_backward(inputs, dqkv, lead, input_grad, xp)
            if grads is None:
                return None
            if unbatched:
                grads = tuple(g[:, 0, :] if batch_axis == 1 else g[0, :, :] for g in grads)
            if inputs.arity == 0:
                return grads[0]
            return (*grads, *(None,) * (inputs.arity - 3))

        return result, backprop

    def _project(self, a: Array, i: int, xp: Namespace, to_heads: tuple[int, ...]) -> Array:
        """Input ``a`` through the i-th third of the projection, as (N, H, L, d)."""
        e = self.embed_dim
        w = self.in_proj_weight.data[i * e:(i + 1) * e, :]
        b = None if self.in_proj_bias is None else self.in_proj_bias.data[i * e:(i + 1) * e]
        z = linear(a, w, b)
        return xp.permute_dims(xp.reshape(z, (*a.shape[:2], self.num_heads, self.head_dim)),
                               to_heads)

    def _bias(self, inputs: _Inputs, heads_shape: tuple[int, ...], xp: Namespace) -> Any:
        """The masks as one additive bias broadcasting to (N, H, L, S), or None."""
        kpm, mask = inputs.key_padding_mask, inputs.attn_mask
        if kpm is None and mask is None:
            return None
        n, h, length = heads_shape[:3]
        like = inputs.query
        zero = xp.zeros((), dtype=like.dtype, device=_device(like))
        bias = None
        if kpm is not None:  # True: the key is ignored
            kpm = xp.where(kpm, zero - math.inf, zero) if kpm.dtype == xp.bool else kpm
            bias = xp.reshape(kpm, (n, 1, 1, kpm.shape[-1]))
        if mask is not None:  # True: the pair is not allowed
            mask = xp.where(mask, zero - math.inf, zero) if mask.dtype == xp.bool else mask
            if mask.ndim == 3:  # (N·H, L, S), unbatched (H, L, S): n = 1
                mask = xp.reshape(mask, (n, h, length, mask.shape[-1]))
            bias = mask if bias is None else bias + mask
        if self.is_causal:  # with a padding mask (an attn_mask is refused): both as one bias
            s = inputs.key.shape[0 if not self.batch_first else 1]
            rows = xp.arange(length, device=_device(like))[:, None]
            cols = xp.arange(s, device=_device(like))[None, :]
            bias = bias + xp.where(cols <= rows, zero, zero - math.inf)
        return bias

    def _returned_weights(self, saved: AttentionSaved, unbatched: bool, xp: Namespace) -> Array:
        weights = saved.weights
        if self.average_attn_weights:
            weights = xp.mean(weights, axis=1)
        return weights[0, ...] if unbatched else weights

    def _weights_gradient(self, dweights: Any, unbatched: bool, xp: Namespace) -> Any:
        """∂L/∂A per head (N, H, L, S) from the returned weights' gradient (or None)."""
        if dweights is None:
            return None
        if unbatched:
            dweights = xp.expand_dims(dweights, axis=0)
        if self.average_attn_weights:
            dweights = xp.expand_dims(dweights, axis=1) / self.num_heads
        return dweights

    def _out_proj_backward(self, dy: Array, merged: Array, w_out: Array, xp: Namespace) -> Array:
        weight, bias = self.out_proj.weight, self.out_proj.bias
        dmerged, dw, db = linear_backward(
            dy, merged, w_out, input_grad=True,
            bias_grad=bias is not None and bias.requires_grad, xp=xp,
            weight_grad_out=weight.grad_buffer if weight.grad is None else None,
            bias_grad_out=bias.grad_buffer if bias is not None and bias.grad is None else None)
        weight.accumulate_grad(dw)
        if bias is not None:
            bias.accumulate_grad(db)
        return dmerged

    def _in_proj_backward(
        self, inputs: _Inputs, dheads: tuple[Array, ...], lead: tuple[int, ...],
        input_grad: bool, xp: Namespace,
    ) -> tuple[Array, ...] | None:
        """Accumulate ∂L/∂in_proj_weight and ∂L/∂in_proj_bias; return the inputs' gradients
        ((dx,) packed, (dquery, dkey, dvalue) otherwise) or None without ``input_grad``.
        ``dheads``: the three (N, H, L, d) gradients, or (packed,) the (..., 3E) one."""
        weight, bias = self.in_proj_weight, self.in_proj_bias
        w = weight.data
        bias_grad = bias is not None and bias.requires_grad
        if inputs.packed:
            if len(dheads) == 1:
                dqkv = dheads[0]
            else:  # (N, H, L, d) x3 -> (L, N, 3, H, d) (batch_first: (N, L, 3, H, d))
                order = (1, 3, 0, 2, 4) if self.batch_first else (3, 1, 0, 2, 4)
                dqkv = xp.reshape(xp.permute_dims(xp.stack(dheads, axis=0), order),
                                  (*lead, 3 * w.shape[1]))
            dx, dw, db = linear_backward(
                dqkv, inputs.query, w, input_grad=input_grad, bias_grad=bias_grad, xp=xp,
                weight_grad_out=weight.grad_buffer if weight.grad is None else None,
                bias_grad_out=bias.grad_buffer if bias is not None and bias.grad is None
                else None)
            weight.accumulate_grad(dw)
            if bias is not None:
                bias.accumulate_grad(db)
            return None if dx is None else (dx,)
        e = self.embed_dim
        from_heads = (0, 2, 1, 3) if self.batch_first else (2, 0, 1, 3)
        parts = []
        for i, (a, g) in enumerate(zip((inputs.query, inputs.key, inputs.value), dheads,
                                       strict=True)):
            g = xp.reshape(xp.permute_dims(g, from_heads), (*a.shape[:2], e))
            parts.append(linear_backward(g, a, w[i * e:(i + 1) * e, :], input_grad=input_grad,
                                         bias_grad=bias_grad, xp=xp))
        weight.accumulate_grad(xp.concat([part[1] for part in parts], axis=0))
        if bias is not None:
            bias.accumulate_grad(xp.concat([part[2] for part in parts], axis=0))
        if not input_grad:
            return None
        return tuple(part[0] for part in parts)


def _device(a: Array) -> Any:
    return array_api_compat.device(a)


def _strided_products(xp: Namespace) -> bool:
    """Whether ``ufunc_into`` writes products into strided views for ``xp`` (NumPy's
    ``matmul(out=)``; elsewhere the layer transposes with copies)."""
    return library_of(xp).name == "numpy"
