"""``Embedding``: a lookup table of learned vectors, indexed by integer token ids, as PyTorch's.

State under PyTorch's name and shape: ``weight`` (num_embeddings, embedding_dim), so a
``torch.nn.Embedding``'s state dict, converted to NumPy, loads as it is.

The layer takes integers: it declares ``input_kind = "integer"``, so the public boundary
(``forward``, ``module(x)``) of the Embedding itself and of every container whose first layer
it is (a ``Sequential``, a language model whose first sub-module is its token embedding)
accepts integer arrays of any integer dtype on the model's device, and refuses floats with a
message naming the Embedding (see :class:`~nnbackend.layers.module.Module`'s ``input_kind``).
"""

from __future__ import annotations

from typing import Any

from .._checks import check_int
from .._typing import Array, Backprop
from ..backend import dtype_name, get_backend
from ..functional.embedding import (
    _refuse_options,
    embedding_backward,
    embedding_forward,
    normalize_padding_idx,
)
from ..init import draw, standard_normal
from .module import Context, Module, Parameter

__all__ = ["Embedding"]


class Embedding(Module):
    """y[..., :] = W[ids[...], :]: the rows of a learned table named by integer ids.

    Parameters
    ----------
    num_embeddings : int
        V, the number of rows (the vocabulary's size): ids lie in [0, V).
    embedding_dim : int
        E, the width of each row; the output has shape ``ids.shape + (E,)``.
    padding_idx : int, optional
        An id whose row is initialised to zeros and never receives a gradient (a padding
        token's); negative values count from the end, as PyTorch's. Its row is still looked up
        as it is (a loaded non-zero row is returned as is, as PyTorch does).
    max_norm, norm_type, scale_grad_by_freq, sparse
        PyTorch's options: renormalising looked-up rows, scaling gradients by id frequency and
        sparse gradients are not supported; anything but the defaults raises
        NotImplementedError (never silently ignored).
    dtype : optional
        float32 (default) or float64: the table's.
    backend : optional
        Where the table lives (see :func:`nnbackend.get_backend`; default: the current one).
    seed : int, optional
        Seed of the initialisation W ~ N(0, 1) (PyTorch's), drawn on the host from
        ``numpy.random.default_rng(seed)`` in float64, cast and transferred once, as Linear's:
        the same seed gives the same table on every backend. ``None`` draws fresh entropy.

    Notes
    -----
    Ids are integers of any integer dtype on the table's device. Ids out of range raise
    ValueError where they live in host memory (NumPy, array-api-strict, PyTorch CPU); on an
    accelerator (and JAX) they are not read back, and their rows come out NaN. The ids have no
    gradient: ``backprop`` returns None. ∂L/∂W[v] sums the rows of ∂L/∂y of every position
    with id v (repeated ids accumulate; :mod:`nnbackend.functional.embedding`), the padding
    row excepted. PyTorch's ``_weight``/``_freeze`` constructor arguments are not taken: load a
    state dict, and freeze with ``requires_grad_(False)``.
    """

    input_kind = "integer"

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        *,
        dtype: Any = None,
        backend: Any = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.num_embeddings = check_int(num_embeddings, what="Embedding: num_embeddings",
                                        minimum=1)
        self.embedding_dim = check_int(embedding_dim, what="Embedding: embedding_dim", minimum=1)
        _refuse_options(max_norm, scale_grad_by_freq, sparse, "Embedding")
        self.padding_idx = normalize_padding_idx(padding_idx, self.num_embeddings, "Embedding")
        be = get_backend(backend)
        dt = be.dtype(dtype)
        shape = (self.num_embeddings, self.embedding_dim)
        table = draw(standard_normal, shape, seed, where=repr(self))
        if self.padding_idx is not None:
            table[self.padding_idx] = 0.0
        self.weight = Parameter(be.asarray(table, dtype=dt, copy=True), "weight")

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (see :mod:`nnbackend.layers.description`), with the
        table's dtype as it is now."""
        return {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim,
                "padding_idx": self.padding_idx, "dtype": dtype_name(self.weight.dtype)}

    def extra_repr(self) -> str:
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"

    def _reference_array(self) -> Array:
        return self.weight.data

    def infer(self, x: Array, ctx: Context) -> Array:
        return embedding_forward(x, self.weight.data, xp=ctx.xp, caller=repr(self))[0]

    def forward_pass(self, x: Array, ctx: Context) -> tuple[Array, Backprop]:
        weight, xp = self.weight, ctx.xp
        y, saved = embedding_forward(x, weight.data, self.padding_idx, xp=xp, caller=repr(self))

        def backprop(dy: Array) -> None:
            if weight.requires_grad:
                weight.accumulate_grad(embedding_backward(dy, saved, xp=xp))
            return None  # integer ids have no gradient

        return y, backprop
