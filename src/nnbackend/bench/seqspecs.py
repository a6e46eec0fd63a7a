"""What the sequence benchmarks run: a transformer encoder layer and an LSTM layer
(:data:`SEQ_SIZES`), their FLOP counts, their data and the initial state every target starts
from (:func:`seq_parameters`), and nnbackend's layer for them (:func:`build_seq_model`).

Two layers, float32, batch first (N, T, features):

``transformer`` (d = 128, 4 heads, T = 128, batch 16), one block of the small GPT: PyTorch's
``TransformerEncoderLayer(d_model=128, nhead=4, dim_feedforward=512, dropout=0.0,
activation="gelu", batch_first=True, norm_first=True)`` run with a causal mask (each position
attends to itself and the positions before it)::

    h = x + out_proj(attention(in_proj(LN₁(x)), causal))
    y = h + linear2(GELU(linear1(LN₂(h))))

``dim_feedforward`` is 4·d, as in GPT-2; dropout is 0 (nothing random: every target computes
the same values, and no library's dropout kernel is timed).

``lstm`` (input 64, hidden 128, T = 64, batch 32): PyTorch's ``LSTM(64, 128,
batch_first=True)``, one layer, zero initial states; the step uses the output sequence y
(N, T, H) (h_n and c_n receive no gradient).

Both layers are the inside of a network (a GPT's embedding feeds the first block; a
character model's embedding feeds the LSTM), so the training steps compute ∂L/∂x. The loss is
the mean squared error against a fixed target t ~ N(0, 1) of y's shape, drawn once with x:
L = mean((y − t)²), the same on every target.

FLOPs (:meth:`SeqSpec.flops`) count the matrix products only, by the usual convention (2·m·k·n
per product of an (m, k) and a (k, n) matrix). With n = N·T tokens, model width d, feed-forward
width F, and the attention dense (the causal mask's zero half is counted too, as the dense
products compute it)::

    transformer forward: in_proj 2·n·d·3d, scores QKᵀ 2·N·T²·d, A·V 2·N·T²·d,
                         out_proj 2·n·d², linear1 2·n·d·F, linear2 2·n·F·d
    LSTM forward:        input products 2·n·I·4H (x W_ihᵀ), recurrent products 2·n·H·4H
                         (h W_hhᵀ, all T steps: the first one's h₀ = 0 is counted too)

Backward, every product's two operands get a gradient, each costing the forward product again
(∂L/∂W and ∂L/∂x of a linear map; ∂L/∂Q and ∂L/∂K, ∂L/∂A and ∂L/∂V of the attention), so a
training step is exactly 3× the forward. Layer norms, softmax, GELU, the gates' elementwise
math, biases, residual additions, the loss and the optimizer are not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np

from ..backend import BackendUnavailableError, get_backend
from .specs import _check_workload

__all__ = [
    "SEQ_SIZES",
    "SEQ_WORKLOADS",
    "SeqSpec",
    "build_seq_model",
    "make_seq_data",
    "seq_parameters",
]

SEQ_WORKLOADS: Final = ("forward", "fwd-bwd", "train-adam")
"""The steps benchmarked on the sequence layers (Adam, lr 1e-3, as the other benchmarks')."""


@dataclass(frozen=True)
class SeqSpec:
    """A benchmarked sequence layer and its batch.

    Attributes
    ----------
    name : str
        ``transformer``, ``lstm`` (or their ``-tiny`` versions, for tests).
    kind : {"transformer", "lstm"}
    batch : int
        N.
    length : int
        T, the sequence length.
    width : int
        The input's features: the transformer's d_model, the LSTM's input_size.
    hidden : int
        The transformer's dim_feedforward, the LSTM's hidden_size.
    heads : int
        The transformer's nhead (0 for the LSTM).
    """

    name: str
    kind: str
    batch: int
    length: int
    width: int
    hidden: int
    heads: int = 0

    @property
    def label(self) -> str:
        """``"d128h4T128"`` or ``"64-128T64"``: the layer's widths and T."""
        if self.kind == "transformer":
            return f"d{self.width}h{self.heads}T{self.length}"
        return f"{self.width}-{self.hidden}T{self.length}"

    @property
    def workloads(self) -> tuple[str, ...]:
        """The workloads this layer is benchmarked on (:data:`SEQ_WORKLOADS`)."""
        return SEQ_WORKLOADS

    @property
    def input_grad(self) -> bool:
        """The training steps compute ∂L/∂x (both layers sit inside a network)."""
        return True

    def with_batch(self, batch: int | None) -> SeqSpec:
        """This spec at another batch size (itself for None or its own)."""
        return self if batch is None or batch == self.batch else replace(self, batch=batch)

    def input_shape(self, batch: int | None = None) -> tuple[int, int, int]:
        """(N, T, width)."""
        return (batch or self.batch, self.length, self.width)

    def output_shape(self, batch: int | None = None) -> tuple[int, int, int]:
        """(N, T, d_model) for the transformer, (N, T, hidden_size) for the LSTM."""
        features = self.width if self.kind == "transformer" else self.hidden
        return (batch or self.batch, self.length, features)

    def flops_by_layer(self, workload: str,
                       batch: int | None = None) -> dict[str, tuple[int, int, int]]:
        """Per product: (forward, ∂L/∂W, ∂L/∂x) FLOPs of one step of ``workload`` (zeros for
        what the step does not compute). The attention's two products have no weight: their
        second operand's gradient (∂L/∂K, ∂L/∂V) stands in the ∂L/∂W place, their first
        operand's (∂L/∂Q, ∂L/∂A) in the ∂L/∂x place."""
        _check_workload(workload)
        n_tokens = (batch or self.batch) * self.length
        d, f, t = self.width, self.hidden, self.length
        if self.kind == "transformer":
            forward = {"in_proj": 2 * n_tokens * d * 3 * d, "scores": 2 * n_tokens * t * d,
                       "attend": 2 * n_tokens * t * d, "out_proj": 2 * n_tokens * d * d,
                       "linear1": 2 * n_tokens * d * f, "linear2": 2 * n_tokens * f * d}
        else:
            forward = {"input": 2 * n_tokens * d * 4 * f, "recurrent": 2 * n_tokens * f * 4 * f}
        backward = workload != "forward"
        return {name: (fwd, fwd if backward else 0, fwd if backward else 0)
                for name, fwd in forward.items()}

    def flops(self, workload: str, batch: int | None = None) -> float:
        """Matrix-product FLOPs of one step (module docstring)."""
        return float(sum(sum(v) for v in self.flops_by_layer(workload, batch).values()))


SEQ_SIZES: dict[str, SeqSpec] = {
    "transformer": SeqSpec("transformer", "transformer", 16, 128, 128, 512, 4),
    "lstm": SeqSpec("lstm", "lstm", 32, 64, 64, 128),
    # for tests: the same layers, narrow and short, at batch 2
    "transformer-tiny": SeqSpec("transformer-tiny", "transformer", 2, 5, 8, 32, 2),
    "lstm-tiny": SeqSpec("lstm-tiny", "lstm", 2, 5, 3, 4),
}
"""The benchmarked sequence layers by name (the ``-tiny`` ones exist for fast tests)."""

_PUBLIC_SEQ_SIZES = ("transformer", "lstm")


def make_seq_data(spec: SeqSpec, batch: int | None = None, *,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One batch on the host, float32: x ~ N(0, 1) of shape (N, T, width) and the loss's
    target t ~ N(0, 1) of the output's shape."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(spec.input_shape(batch), dtype=np.float32)
    return x, rng.standard_normal(spec.output_shape(batch), dtype=np.float32)


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], bound: float) -> np.ndarray:
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)


def seq_parameters(spec: SeqSpec, *, seed: int = 0) -> dict[str, np.ndarray]:
    """The initial state every target starts from, under PyTorch's state-dict names, float32.

    Drawn on the host from ``numpy.random.default_rng(seed)`` with PyTorch's schemes for these
    layers: the transformer's ``self_attn.in_proj_weight`` Xavier-uniform, ``in_proj_bias``
    and ``out_proj.bias`` zero, the other linear weights and biases U(±1/√fan_in), the layer
    norms γ = 1, β = 0; the LSTM's ``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``,
    ``bias_hh_l0`` U(±1/√H) (gates in PyTorch's order i, f, g, o).
    """
    rng = np.random.default_rng(seed)
    if spec.kind == "lstm":
        i, h = spec.width, spec.hidden
        bound = 1.0 / math.sqrt(h)
        return {"weight_ih_l0": _uniform(rng, (4 * h, i), bound),
                "weight_hh_l0": _uniform(rng, (4 * h, h), bound),
                "bias_ih_l0": _uniform(rng, (4 * h,), bound),
                "bias_hh_l0": _uniform(rng, (4 * h,), bound)}
    d, f = spec.width, spec.hidden
    xavier = math.sqrt(6.0 / (d + 3 * d))
    return {
        "self_attn.in_proj_weight": _uniform(rng, (3 * d, d), xavier),
        "self_attn.in_proj_bias": np.zeros(3 * d, np.float32),
        "self_attn.out_proj.weight": _uniform(rng, (d, d), 1.0 / math.sqrt(d)),
        "self_attn.out_proj.bias": np.zeros(d, np.float32),
        "linear1.weight": _uniform(rng, (f, d), 1.0 / math.sqrt(d)),
        "linear1.bias": _uniform(rng, (f,), 1.0 / math.sqrt(d)),
        "linear2.weight": _uniform(rng, (d, f), 1.0 / math.sqrt(f)),
        "linear2.bias": _uniform(rng, (d,), 1.0 / math.sqrt(f)),
        "norm1.weight": np.ones(d, np.float32),
        "norm1.bias": np.zeros(d, np.float32),
        "norm2.weight": np.ones(d, np.float32),
        "norm2.bias": np.zeros(d, np.float32),
    }


def _layer(name: str) -> Any:
    """nnbackend's layer class ``name`` (a clear error while a layer does not exist yet)."""
    from .. import layers

    cls = getattr(layers, name, None)
    if cls is None:
        msg = f"nnbackend.layers has no {name}: the sequence benchmarks need it"
        raise BackendUnavailableError(msg)
    return cls


def _nnbackend_layer(spec: SeqSpec) -> Any:
    """The layer of ``spec`` (before its weights are loaded)."""
    if spec.kind == "transformer":
        return _layer("TransformerEncoderLayer")(
            spec.width, spec.heads, dim_feedforward=spec.hidden, dropout=0.0,
            activation="gelu", norm_first=True, batch_first=True, is_causal=True)
    return _layer("LSTM")(spec.width, spec.hidden, batch_first=True)


def build_seq_model(spec: SeqSpec, backend: Any = "numpy", *, seed: int = 0) -> Any:
    """nnbackend's layer for ``spec`` on ``backend``, loaded with :func:`seq_parameters`.

    Raises
    ------
    BackendUnavailableError
        A layer the benchmark needs is missing from this version of nnbackend.
    """
    be = get_backend(backend)
    model = _nnbackend_layer(spec).to(be)
    model.load_state_dict(seq_parameters(spec, seed=seed))  # every name, as PyTorch's
    return model
