"""``TransformerLM``: a small GPT, a decoder-only transformer over token ids.

::

    h⁰ = dropout(E[x] + P[0:T])                     token embedding E (V, d), positions P (C, d)
    hˡ = TransformerEncoderLayerˡ(hˡ⁻¹)             pre-norm, GELU, causal self-attention
    z  = LayerNorm(hᴸ) Eᵀ                           logits (N, T, V): the output projection is E

for ids x of shape (N, T), T ≤ C (the positional table's length, ``context``). The output
projection is tied to the token embedding: one parameter, under PyTorch's two names
``token_embedding.weight`` and ``lm_head.weight``. ``state_dict()`` holds it once (as
``token_embedding.weight``); a PyTorch state dict that holds both keys (a tied
``torch.nn`` model's does) loads when the two are equal. Its gradient is the sum of both uses
(the lookup's scatter-add and the projection's ``dzᵀ h``), as :meth:`Parameter.accumulate_grad`
adds.

The model creates its tie itself, so :func:`nnbackend.layers.describe` records it (its
``config`` has no weights) and :func:`nnbackend.layers.build` rebuilds it tied:
``tied_parameters()`` declares the tie, and ties made by hand elsewhere are still refused.

State-dict names (the PyTorch module of the same structure, ``tests/test_gpt.py``)::

    token_embedding.weight (V, d)            position_embedding.weight (C, d)
    layers.{i}.self_attn.in_proj_weight ...  (torch.nn.TransformerEncoderLayer's)
    norm.weight, norm.bias (d,)              lm_head.weight (V, d): the token embedding

Where this differs from ``torch.nn`` defaults: both embeddings are drawn from N(0, 0.02²)
(GPT-2's), not ``nn.Embedding``'s N(0, 1): a tied table of unit rows makes the first logits
~√d large, and training starts far slower (measured on the pydoc corpus: 2.21 against 2.69
bits per character after 40 s of the same PyTorch model).
"""

from __future__ import annotations

from typing import Any

from .._checks import check_int, describe_placement
from .._typing import Array, Backprop
from ..backend import dtype_name, get_backend
from ..init import draw, normal
from .dropout import Dropout
from .embedding import Embedding
from .linear import Linear
from .module import Context, Module
from .normalization import LayerNorm
from .sequential import Sequential
from .transformer import TransformerEncoderLayer

__all__ = ["TransformerLM"]

_EMBEDDING_STD = 0.02


class TransformerLM(Module):
    """A GPT-style language model: token and learned positional embeddings, ``num_layers``
    causal pre-norm ``TransformerEncoderLayer``\\ s, a final ``LayerNorm`` and an output
    projection tied to the token embedding (see the module docstring).

    Parameters
    ----------
    vocab_size : int
        V: ids lie in [0, V); the logits have V classes.
    d_model : int
        d, the width of every position's vector.
    nhead : int
        Attention heads (d must be divisible by it).
    num_layers : int
        L, transformer layers.
    dim_feedforward : int, optional
        The feed-forward width (default 4·d).
    context : int
        C, the positional table's length: the longest sequence the model takes.
    dropout : float
        After the embeddings and inside every layer (attention weights, its output, the
        feed-forward's), as ``TransformerEncoderLayer``'s.
    dtype, backend
        Of every parameter.
    seed : int, optional
        The layers are drawn with seeds ``seed, seed + 1, ...`` in order (each dropout stream
        too); None draws each from fresh entropy.

    Input and output
    ----------------
    ``x``: integer ids (N, T) on the model's device, 1 ≤ T ≤ C; the output: logits (N, T, V)
    in the parameters' dtype; position t sees positions 0..t only. A longer sequence raises
    ValueError naming both lengths; float ids raise TypeError (the boundary); ids outside
    [0, V) raise ValueError where they live in host memory and give NaN rows on an
    accelerator (the token embedding's policy).
    """

    has_training_behaviour = True  # dropout (also when p = 0: the flag is per class)

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 64,
        nhead: int = 4,
        num_layers: int = 2,
        dim_feedforward: int | None = None,
        context: int = 64,
        dropout: float = 0.0,
        *,
        dtype: Any = None,
        backend: Any = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        where = "TransformerLM"
        self.vocab_size = check_int(vocab_size, what=f"{where}: vocab_size", minimum=1)
        self.d_model = check_int(d_model, what=f"{where}: d_model", minimum=1)
        self.nhead = check_int(nhead, what=f"{where}: nhead", minimum=1)
        self.num_layers = check_int(num_layers, what=f"{where}: num_layers", minimum=0)
        self.dim_feedforward = check_int(
            4 * self.d_model if dim_feedforward is None else dim_feedforward,
            what=f"{where}: dim_feedforward", minimum=1)
        self.context = check_int(context, what=f"{where}: context", minimum=1)
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or \
                not 0.0 <= dropout < 1.0:
            msg = f"{where}: dropout must be a number in [0, 1), got {dropout!r}"
            raise ValueError(msg)
        self.dropout_p = float(dropout)
        be = get_backend(backend)
        dt = be.dtype(dtype)
        seeds = _seeds(seed)
        placed = {"dtype": dt, "backend": be}
        # The token embedding is registered first: the model takes integer ids because its
        # first sub-module does (Module.input_kind).
        self.token_embedding = Embedding(self.vocab_size, self.d_model, seed=next(seeds),
                                         **placed)
        self.position_embedding = Embedding(self.context, self.d_model, seed=next(seeds),
                                            **placed)
        for table in (self.token_embedding, self.position_embedding):
            _redraw_normal(table, _EMBEDDING_STD, next(seeds), be, dt)
        self.dropout = Dropout(self.dropout_p, seed=next(seeds))
        self.layers = Sequential(*(
            TransformerEncoderLayer(self.d_model, self.nhead, self.dim_feedforward,
                                    self.dropout_p, activation="gelu", norm_first=True,
                                    batch_first=True, is_causal=True, seed=next(seeds), **placed)
            for _ in range(self.num_layers)))
        self.norm = LayerNorm(self.d_model, **placed)
        self.lm_head = Linear(self.d_model, self.vocab_size, bias=False, seed=next(seeds),
                              **placed)
        self.lm_head.weight = self.token_embedding.weight  # the tie: one Parameter, two names

    # ---------------------------------------------------------------- description

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (see :mod:`nnbackend.layers.description`)."""
        return {"vocab_size": self.vocab_size, "d_model": self.d_model, "nhead": self.nhead,
                "num_layers": self.num_layers, "dim_feedforward": self.dim_feedforward,
                "context": self.context, "dropout": self.dropout_p,
                "dtype": dtype_name(self.token_embedding.weight.dtype)}

    def tied_parameters(self) -> dict[str, str]:
        """The ties this model makes itself, ``{other name: first name}`` (relative to it)."""
        return {"lm_head.weight": "token_embedding.weight"}

    def extra_repr(self) -> str:
        return (f"vocab_size={self.vocab_size}, d_model={self.d_model}, nhead={self.nhead}, "
                f"num_layers={self.num_layers}, dim_feedforward={self.dim_feedforward}, "
                f"context={self.context}, dropout={self.dropout_p}")

    def _where(self) -> str:
        return "TransformerLM"

    # ---------------------------------------------------------------- the protocol

    def check_input(self, x: Any, ctx: Context) -> None:
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) != 2:
            msg = (f"{self._where()}: expected token ids (N, T), got shape {shape} "
                   f"({describe_placement(x)})")
            raise ValueError(msg)
        if shape[1] > self.context:
            msg = (f"{self._where()}: a sequence of length {shape[1]} is longer than the "
                   f"positional table's {self.context} positions (context={self.context}); "
                   f"crop it to the last {self.context} ids")
            raise ValueError(msg)
        if shape[1] == 0:
            msg = f"{self._where()}: the sequences are empty (shape {shape})"
            raise ValueError(msg)

    def _positions(self, length: int) -> Array:
        return self.position_embedding.weight.data[:length, :]

    def infer(self, x: Array, ctx: Context) -> Array:
        h = self.token_embedding.infer(x, ctx) + self._positions(int(x.shape[1]))
        h = self.dropout.infer(h, ctx)
        h = self.layers.infer(h, ctx)
        return self.lm_head.infer(self.norm.infer(h, ctx), ctx)

    def forward_pass(self, x: Array, ctx: Context) -> tuple[Array, Backprop]:
        xp, length = ctx.xp, int(x.shape[1])
        inner = ctx.wanting_input_grad
        tokens, tokens_back = self.token_embedding.forward_pass(x, ctx)
        h, drop_back = self.dropout.forward_pass(tokens + self._positions(length), inner)
        h, layers_back = self.layers.forward_pass(h, inner)
        h, norm_back = self.norm.forward_pass(h, inner)
        logits, head_back = self.lm_head.forward_pass(h, inner)
        positions = self.position_embedding.weight

        def backprop(dy: Array) -> None:
            dh = drop_back(layers_back(norm_back(head_back(dy))))
            tokens_back(dh)  # the tied table's second contribution (the first: the head's)
            if positions.requires_grad:
                dpos = xp.sum(dh, axis=0)  # ∂L/∂P[t] = Σₙ ∂L/∂h⁰[n, t]
                if length < self.context:
                    rest = xp.zeros((self.context - length, self.d_model), dtype=dpos.dtype,
                                    device=_device(dpos))
                    dpos = xp.concat([dpos, rest], axis=0)
                positions.accumulate_grad(dpos)
            return None  # integer ids have no gradient

        return logits, backprop


def _seeds(seed: int | None) -> Any:
    import itertools

    return itertools.repeat(None) if seed is None else itertools.count(seed)


def _redraw_normal(table: Embedding, std: float, seed: int | None, be: Any, dt: Any) -> None:
    """Replace an embedding table by N(0, std²) draws (on the host from ``seed``, as every
    initialiser here: the same on every backend)."""
    shape = tuple(table.weight.shape)
    values = draw(normal(std), shape, seed, where=repr(table))
    table.weight.data = be.asarray(values, dtype=dt, copy=True)


def _device(a: Array) -> Any:
    from array_api_compat import device

    return device(a)
