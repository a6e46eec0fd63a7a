"""``TransformerEncoderLayer``: PyTorch's ``torch.nn.TransformerEncoderLayer`` (self-attention
and a feed-forward block, each with a residual connection and layer normalisation)."""

from __future__ import annotations

import math
from typing import Any

from .._checks import check_int, check_probability
from .._typing import Array, Backprop
from ..backend import dtype_name, get_backend
from ..init import host_generator, torch_linear_weight
from . import activations
from .attention import MultiheadAttention, _Inputs
from .dropout import Dropout
from .linear import Linear
from .module import Context, Module
from .normalization import LayerNorm

__all__ = ["TransformerEncoderLayer"]

_ACTIVATIONS = {"relu": "ReLU", "gelu": "GELU"}  # the layers of .activations


class TransformerEncoderLayer(Module):
    """Self-attention and a feed-forward block, as ``torch.nn.TransformerEncoderLayer``.

    ::

        norm_first=False (post-norm, PyTorch's default):
            x = norm1(x + dropout1(self_attn(x)))
            y = norm2(x + dropout2(linear2(dropout(activation(linear1(x))))))
        norm_first=True (pre-norm, as GPT-2):
            x = x + dropout1(self_attn(norm1(x)))
            y = x + dropout2(linear2(dropout(activation(linear1(norm2(x))))))

    Parameters
    ----------
    d_model, nhead : int
        The width E and the number of attention heads (E divisible by nhead).
    dim_feedforward : int
        The feed-forward block's hidden width.
    dropout : float
        The probability of every dropout: the attention weights' (``self_attn``), ``dropout``
        (feed-forward hidden), ``dropout1`` and ``dropout2`` (the two residual branches).
    activation : {"relu", "gelu"}
        The feed-forward activation (GELU exact, as PyTorch's ``F.gelu``). PyTorch also takes a
        callable; here a callable is refused (its backward would be unknown).
    layer_norm_eps : float
        ε of both layer normalisations.
    batch_first : bool
        Input (N, T, E) when True, (T, N, E) when False (PyTorch's default); (T, E) unbatched.
    norm_first : bool
        Pre-norm (True) or post-norm (False).
    bias : bool
        Biases in the linear maps and the layer normalisations.
    is_causal : bool
        Self-attention with the causal mask (position t attends to 0..t) without a
        ``src_mask``: this layer takes one input, so the flag PyTorch's ``forward`` takes (with
        the mask) lives here.
    dtype, backend, seed :
        As :class:`Linear`'s. The initial weights are PyTorch's distributions drawn on the host
        from ``numpy.random.default_rng(seed)`` (``self_attn`` as
        :class:`MultiheadAttention`'s, ``linear1``/``linear2`` U(±1/√fan_in) weights and
        biases, the norms ones and zeros); the dropout streams are seeded from it too.

    Input
    -----
    ``src`` alone, or a tuple ``(src, src_mask[, src_key_padding_mask])`` (None for an absent
    mask) as PyTorch's ``forward``: ``src_mask`` (T, T) or (N·nhead, T, T), boolean with
    True = *not allowed*, or floating (added); ``src_key_padding_mask`` (N, T), boolean with
    True = *ignored*, or floating. The backward pass returns ∂L/∂src (a tuple
    ``(dsrc, None[, None])`` for a tuple input). A position whose keys are all masked gets no
    attention (zeros, where PyTorch gives NaN).

    Parameter names as PyTorch's: ``self_attn.in_proj_weight``, ``self_attn.in_proj_bias``,
    ``self_attn.out_proj.weight``/``bias``, ``linear1.*``, ``linear2.*``, ``norm1.*``,
    ``norm2.*``: a ``torch.nn.TransformerEncoderLayer`` state dict converted to NumPy loads.
    """

    has_training_behaviour = True

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
        *,
        is_causal: bool = False,
        dtype: Any = None,
        backend: Any = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        where = "TransformerEncoderLayer"
        d = check_int(d_model, what=f"{where}: d_model", minimum=1)
        f = check_int(dim_feedforward, what=f"{where}: dim_feedforward", minimum=1)
        p = check_probability(dropout, caller=where, name="dropout")
        if not isinstance(activation, str) or activation not in _ACTIVATIONS:
            got = activation if isinstance(activation, str) else type(activation).__name__
            msg = (f"{where}: activation must be 'relu' or 'gelu', got {got!r} (a callable's "
                   "backward is unknown to nnbackend: build the block from layers instead)")
            raise ValueError(msg)
        self.d_model, self.nhead, self.dim_feedforward = d, nhead, f
        self.dropout_p, self.activation_name = p, activation
        self.layer_norm_eps = float(layer_norm_eps)
        self.batch_first, self.norm_first = bool(batch_first), bool(norm_first)
        self.is_causal, self.seed = bool(is_causal), seed
        be = get_backend(backend)
        dt = be.dtype(dtype)
        rng = host_generator(seed, where=where)

        def child_seed() -> int:
            return int(rng.integers(0, 2**63))

        placed: dict[str, Any] = {"dtype": dt, "backend": be}
        self.self_attn = MultiheadAttention(d, nhead, p, bias=bias, batch_first=batch_first,
                                            is_causal=is_causal, seed=child_seed(), **placed)
        self.linear1 = self._linear(d, f, bias, rng, placed)
        self.dropout = Dropout(p, seed=child_seed())
        self.linear2 = self._linear(f, d, bias, rng, placed)
        self.norm1 = LayerNorm(d, eps=self.layer_norm_eps, bias=bias, **placed)
        self.norm2 = LayerNorm(d, eps=self.layer_norm_eps, bias=bias, **placed)
        self.dropout1 = Dropout(p, seed=child_seed())
        self.dropout2 = Dropout(p, seed=child_seed())
        self.activation: Module = getattr(activations, _ACTIVATIONS[activation])()

    @staticmethod
    def _linear(n_in: int, n_out: int, bias: bool, rng: Any, placed: dict[str, Any]) -> Linear:
        """PyTorch's ``nn.Linear`` initialisation: weight and bias U(±1/√fan_in)."""
        layer = Linear(n_in, n_out, bias=bias, init=torch_linear_weight(rng), **placed)
        if layer.bias is not None:
            bound = 1.0 / math.sqrt(n_in)
            be = placed["backend"]
            layer.bias.data = be.asarray(rng.uniform(-bound, bound, size=n_out),
                                         dtype=placed["dtype"], copy=True)
        return layer

    # ------------------------------------------------------------------ description

    def config(self) -> dict[str, Any]:
        """The constructor's arguments."""
        return {"d_model": self.d_model, "nhead": self.nhead,
                "dim_feedforward": self.dim_feedforward, "dropout": self.dropout_p,
                "activation": self.activation_name, "layer_norm_eps": self.layer_norm_eps,
                "batch_first": self.batch_first, "norm_first": self.norm_first,
                "bias": self.linear1.bias is not None, "is_causal": self.is_causal,
                "dtype": dtype_name(self.linear1.weight.dtype), "seed": self.seed}

    def extra_repr(self) -> str:
        flags = [name for name in ("batch_first", "norm_first", "is_causal")
                 if getattr(self, name)]
        return ", ".join([f"d_model={self.d_model}", f"nhead={self.nhead}",
                          f"dim_feedforward={self.dim_feedforward}",
                          f"dropout={self.dropout_p}", f"activation={self.activation_name}",
                          *flags])

    def _reference_array(self) -> Array:
        return self.self_attn.in_proj_weight.data

    # ------------------------------------------------------------------ inputs

    def check_input(self, x: Any, ctx: Context) -> None:
        self._parse(x, ctx)

    def _parse(self, x: Any, ctx: Context) -> tuple[Array, Any, Any, int]:
        """``(src, src_mask, src_key_padding_mask, arity)`` (arity 0: a single array)."""
        if not isinstance(x, tuple):
            return x, None, None, 0
        if not 1 <= len(x) <= 3:
            msg = (f"{self!r}: expected src or a tuple (src, src_mask[, "
                   f"src_key_padding_mask]), got a tuple of {len(x)}")
            raise TypeError(msg)
        src, mask, kpm = (*x, None, None)[:3]
        return src, mask, kpm, len(x)

    def _attention_inputs(self, h: Array, mask: Any, kpm: Any, ctx: Context) -> _Inputs:
        """``h`` as the self-attention's query, key and value (one projection GEMM)."""
        attn = self.self_attn
        if mask is None and kpm is None:
            return attn._parse(h, ctx.xp)
        return attn._parse((h, h, h, kpm, mask), ctx.xp)._replace(packed=True, arity=0)

    # ------------------------------------------------------------------ the protocol

    def infer(self, x: Any, ctx: Context) -> Any:
        src, mask, kpm, _ = self._parse(x, ctx)
        ctx = ctx.with_input_grad(False)
        if self.norm_first:
            h = src + self._attention(self.norm1.infer(src, ctx), mask, kpm, ctx)
            return h + self._feed_forward(self.norm2.infer(h, ctx), ctx)
        h = self.norm1.infer(src + self._attention(src, mask, kpm, ctx), ctx)
        return self.norm2.infer(h + self._feed_forward(h, ctx), ctx)

    def _attention(self, h: Array, mask: Any, kpm: Any, ctx: Context) -> Array:
        a = self.self_attn.attend(self._attention_inputs(h, mask, kpm, ctx), ctx, keep=False)[0]
        return self.dropout1.infer(a, ctx)

    def _feed_forward(self, h: Array, ctx: Context) -> Array:
        h = self.activation.infer(self.linear1.infer(h, ctx), ctx)
        return self.dropout2.infer(self.linear2.infer(self.dropout.infer(h, ctx), ctx), ctx)

    def forward_pass(self, x: Any, ctx: Context) -> tuple[Any, Backprop]:
        src, mask, kpm, arity = self._parse(x, ctx)
        inner = ctx.wanting_input_grad
        norm1, norm2 = self.norm1, self.norm2
        if self.norm_first:
            h, norm1_back = norm1.forward_pass(src, ctx)
            a, attention_back = self._attention_pass(h, mask, kpm, inner)
            a += src  # the residual, into the branch's fresh output
            h, norm2_back = norm2.forward_pass(a, inner)
            y, ff_back = self._feed_forward_pass(h, inner)
            y += a

            def backprop_pre(dy: Array) -> Any:
                da: Array = norm2_back(ff_back(dy))  # inner contexts: never None
                da += dy
                dx = norm1_back(attention_back(da))
                if dx is not None:
                    dx += da
                return dx

            return y, _with_arity(backprop_pre, arity)

        a, attention_back = self._attention_pass(src, mask, kpm, ctx)
        a += src
        h, norm1_back = norm1.forward_pass(a, inner)
        z, ff_back = self._feed_forward_pass(h, inner)
        z += h
        y, norm2_back = norm2.forward_pass(z, inner)

        def backprop_post(dy: Array) -> Any:
            dz: Array = norm2_back(dy)  # inner contexts: never None
            dh: Array = ff_back(dz)
            dh += dz
            da = norm1_back(dh)
            dx = attention_back(da)
            if dx is not None:
                dx += da
            return dx

        return y, _with_arity(backprop_post, arity)

    def _attention_pass(self, h: Array, mask: Any, kpm: Any, ctx: Context) -> tuple[Array,
                                                                                     Backprop]:
        """dropout1(self_attn(h)) and its backward (∂L/∂h, None without ``ctx.input_grad``)."""
        a, attn_back = self.self_attn.attend(self._attention_inputs(h, mask, kpm, ctx), ctx)
        a, drop_back = self.dropout1.forward_pass(a, ctx.wanting_input_grad)
        assert attn_back is not None

        def backprop(da: Array) -> Any:
            return attn_back(drop_back(da))

        return a, backprop

    def _feed_forward_pass(self, h: Array, ctx: Context) -> tuple[Array, Backprop]:
        """dropout2(linear2(dropout(activation(linear1(h))))) and its backward."""
        z, back1 = self.linear1.forward_pass(h, ctx)
        z, act_back = self.activation.forward_pass(z, ctx)
        z, drop_back = self.dropout.forward_pass(z, ctx)
        z, back2 = self.linear2.forward_pass(z, ctx)
        z, drop2_back = self.dropout2.forward_pass(z, ctx)

        def backprop(dz: Array) -> Any:
            return back1(act_back(drop_back(back2(drop2_back(dz)))))

        return z, backprop


def _with_arity(backprop: Backprop, arity: int) -> Backprop:
    """``backprop`` returning ``(dsrc, None, ...)`` for a tuple input of ``arity`` entries."""
    if arity == 0:
        return backprop

    def tupled(dy: Array) -> Any:
        dx = backprop(dy)
        return None if dx is None else (dx, *(None,) * (arity - 1))

    return tupled
