"""Recurrent layers ``RNN``, ``LSTM`` and ``GRU`` over :mod:`nnbackend.functional.recurrent`,
and ``RecurrentOutput``, which puts one in a :class:`~nnbackend.layers.Sequential`.

The arguments, defaults, parameter names and shapes, gate orders, initialisation range and
return values are PyTorch's (``torch.nn.RNN``, ``LSTM``, ``GRU``), so a ``torch.nn`` module's
state dict converted to NumPy loads and gives the same outputs::

    lstm = nb.LSTM(64, 128, num_layers=2, batch_first=True)
    output, (h_n, c_n) = lstm(x)                  # x (N, T, 64): output (N, T, 128)
    output, (h_n, c_n) = lstm((x, (h0, c0)))      # with initial states (L·D, N, H)
    (output, (h_n, c_n)), backprop = lstm.forward(x)
    dx = backprop((d_output, (None, dc_n)))       # None: no gradient from that output

In a Sequential, a :class:`RecurrentOutput` after the recurrent layer keeps the output
sequence (or the last step) as a plain array for the next layer::

    model = nb.Sequential(nb.LSTM(16, 32, batch_first=True),
                          nb.RecurrentOutput(), nb.Linear(32, 10))           # per step
    model = nb.Sequential(nb.LSTM(16, 32, batch_first=True),
                          nb.RecurrentOutput("last", batch_first=True), nb.Linear(32, 10))
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import array_api_compat

from .._checks import check_flag, check_int, check_probability, describe_placement, namespace_of
from .._typing import Array, Backprop, Namespace
from ..backend import dtype_name, get_backend
from ..functional.recurrent import MODES, rnn_backward, rnn_forward
from ..init import host_generator, uniform
from ..random import Generator
from .module import Context, Module, Parameter

__all__ = ["GRU", "LSTM", "RNN", "RecurrentOutput", "recurrent_state_size"]


class RecurrentInputError(ValueError):
    """An input, or an initial state, that a recurrent layer cannot take (shape or layout)."""


class _RNNBase(Module):
    """The stack of recurrent layers shared by RNN, LSTM and GRU (see their docstrings)."""

    has_training_behaviour = True  # the dropout between layers
    _kind: ClassVar[str] = ""

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        bias: bool,
        batch_first: bool,
        dropout: float,
        bidirectional: bool,
        proj_size: int,
        dtype: Any,
        backend: Any,
        seed: int | None,
    ) -> None:
        super().__init__()
        kind = type(self).__name__
        self.mode = mode
        self.input_size = check_int(input_size, what=f"{kind}: input_size", minimum=1)
        self.hidden_size = check_int(hidden_size, what=f"{kind}: hidden_size", minimum=1)
        self.num_layers = check_int(num_layers, what=f"{kind}: num_layers", minimum=1)
        self.bias = check_flag(bias, caller=kind, name="bias")
        self.batch_first = check_flag(batch_first, caller=kind, name="batch_first")
        self.bidirectional = check_flag(bidirectional, caller=kind, name="bidirectional")
        self.dropout = check_probability(dropout, caller=kind, name="dropout")
        if proj_size != 0:
            msg = (f"{kind}: proj_size={proj_size!r} is not supported (an LSTM with projections); "
                   "use proj_size=0, or a Linear layer after the LSTM")
            raise NotImplementedError(msg)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(  # PyTorch's warning: the dropout sits between layers only
                f"{kind}: dropout={self.dropout} has no effect with num_layers=1 (dropout is "
                "applied after every layer but the last)", UserWarning, stacklevel=3)
        self.generator = Generator(seed)
        be = get_backend(backend)
        dt = be.dtype(dtype)
        rng = host_generator(self.generator.seed, where=kind)
        initial = uniform(1.0 / math.sqrt(self.hidden_size))
        rows = MODES[mode] * self.hidden_size
        directions = 2 if self.bidirectional else 1
        self._names: list[tuple[str, str, str | None, str | None]] = []
        for layer in range(self.num_layers):
            width = self.input_size if layer == 0 else directions * self.hidden_size
            for d in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                shapes: dict[str, tuple[int, ...]] = {"weight_ih": (rows, width),
                                                      "weight_hh": (rows, self.hidden_size)}
                if self.bias:
                    shapes.update({"bias_ih": (rows,), "bias_hh": (rows,)})
                for name, shape in shapes.items():  # PyTorch's order: U(−1/√H, 1/√H) each
                    values = initial(shape, rng)
                    setattr(self, name + suffix,
                            Parameter(be.asarray(values, dtype=dt, copy=True), name + suffix))
                self._names.append((f"weight_ih{suffix}", f"weight_hh{suffix}",
                                    f"bias_ih{suffix}" if self.bias else None,
                                    f"bias_hh{suffix}" if self.bias else None))

    # ------------------------------------------------------------------ description

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (the seed: the dropout stream's, see the class)."""
        config: dict[str, Any] = {"input_size": self.input_size,
                                  "hidden_size": self.hidden_size,
                                  "num_layers": self.num_layers}
        if self.mode in ("RNN_TANH", "RNN_RELU"):
            config["nonlinearity"] = "tanh" if self.mode == "RNN_TANH" else "relu"
        config.update({"bias": self.bias, "batch_first": self.batch_first,
                       "dropout": self.dropout, "bidirectional": self.bidirectional,
                       "dtype": dtype_name(self.__dict__["_parameters"]["weight_ih_l0"].dtype),
                       "seed": self.generator.seed})
        return config

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if self.mode == "RNN_RELU":
            text += ", nonlinearity='relu'"
        for name, default in (("bias", True), ("batch_first", False), ("dropout", 0.0),
                              ("bidirectional", False)):
            if getattr(self, name) != default:
                text += f", {name}={getattr(self, name)}"
        return text

    def get_extra_state(self) -> dict[str, Any]:
        """The dropout stream's ``{"version", "seed", "stream", "counter"}``."""
        return self.generator.state()

    def set_extra_state(self, state: Mapping[str, Any]) -> None:
        self.generator.load_state(state)

    # ------------------------------------------------------------------ the input

    def _split(self, x: Any) -> tuple[Array, Any]:
        """(input, hx) from ``x`` or ``(x, hx)``."""
        if isinstance(x, tuple):
            if len(x) != 2:
                msg = (f"{self!r}: a tuple input is (input, {self._hx_form()}), got a tuple of "
                       f"{len(x)}")
                raise TypeError(msg)
            return x[0], x[1]
        return x, None

    def _hx_form(self) -> str:
        return "(h0, c0)" if self.mode == "LSTM" else "h0"

    def _validate(self, x: Any) -> Namespace:
        if not isinstance(x, tuple):
            return super()._validate(x)
        inputs, hx = self._split(x)
        if self.mode == "LSTM" and hx is not None:
            if not (isinstance(hx, tuple) and len(hx) == 2):
                msg = f"{self!r}: the initial state of an LSTM is a pair (h0, c0) or None"
                raise TypeError(msg)
            flat: tuple[Any, ...] = (inputs, *hx)
        else:
            flat = (inputs, hx)
        xp = self._validate_tuple(flat)
        ref = self.__dict__["_parameters"]["weight_ih_l0"].data
        for name, value in zip(("input", "h0", "c0"), flat, strict=False):
            if value is not None and value.dtype != ref.dtype:
                msg = (f"{self!r}: {name} has dtype {dtype_name(value.dtype)}; expected "
                       f"{dtype_name(ref.dtype)}, the dtype of the parameters (cast it: nothing "
                       "is promoted silently)")
                raise TypeError(msg)
        return xp

    def check_input(self, x: Any, ctx: Context) -> None:
        inputs, hx = self._split(x)
        self._check_shapes(inputs, hx)

    def _check_shapes(self, inputs: Array, hx: Any) -> None:
        shape = tuple(inputs.shape)
        layout = "(N, T, I)" if self.batch_first else "(T, N, I)"
        if len(shape) not in (2, 3):
            msg = (f"{self!r}: input must be {layout.replace('I', str(self.input_size))} or "
                   f"(T, {self.input_size}) for one sequence, got shape {shape}")
            raise RecurrentInputError(msg)
        if shape[-1] != self.input_size:
            msg = (f"{self!r}: input has {shape[-1]} features on its last axis, expected "
                   f"input_size={self.input_size} (input of shape {shape})")
            raise RecurrentInputError(msg)
        count = self.num_layers * (2 if self.bidirectional else 1)
        want: tuple[int, ...]
        if len(shape) == 2:
            want = (count, self.hidden_size)
        else:
            want = (count, shape[0] if self.batch_first else shape[1], self.hidden_size)
        if hx is None:
            return
        if self.mode == "LSTM":
            if not (isinstance(hx, tuple) and len(hx) == 2):
                msg = f"{self!r}: the initial state of an LSTM is a pair (h0, c0) or None"
                raise TypeError(msg)
            states = {"h0": hx[0], "c0": hx[1]}
        else:
            if isinstance(hx, tuple):
                msg = f"{self!r}: the initial state is one array h0 (or None), got a tuple"
                raise TypeError(msg)
            states = {"h0": hx}
        for name, value in states.items():
            if value is not None and tuple(value.shape) != want:
                msg = (f"{self!r}: {name} must have shape {want} (num_layers·directions, "
                       f"{'' if len(shape) == 2 else 'N, '}hidden_size) for input of shape "
                       f"{shape}, got {tuple(value.shape)}")
                raise RecurrentInputError(msg)

    def _hx_arrays(self, hx: Any) -> Any:
        """hx for the functional call: an LSTM's pair with None parts as zeros there."""
        if self.mode == "LSTM" and hx is not None:
            h0, c0 = hx
            if h0 is None and c0 is None:
                return None
            if h0 is None or c0 is None:
                given = c0 if h0 is None else h0
                zeros = _zeros_like(given)
                return (zeros, c0) if h0 is None else (h0, zeros)
        return hx

    def _weights(self) -> list[tuple[Array, Array, Array | None, Array | None]]:
        params = self.__dict__["_parameters"]
        return [tuple(None if n is None else params[n].data for n in names)  # type: ignore[misc]
                for names in self._names]

    # ------------------------------------------------------------------ the protocol

    def _run(self, x: Any, ctx: Context) -> tuple[Any, Any, Any]:
        inputs, hx = self._split(x)
        self._check_shapes(inputs, hx)  # containers call forward_pass without check_input
        output, h_n, c_n, saved = rnn_forward(
            inputs, self._hx_arrays(hx), self._weights(), mode=self.mode,
            num_layers=self.num_layers, bidirectional=self.bidirectional, dropout=self.dropout,
            training=self.training, batch_first=self.batch_first, generator=self.generator,
            xp=ctx.xp)
        result = (output, h_n if c_n is None else (h_n, c_n))
        return result, saved, hx

    def infer(self, x: Any, ctx: Context) -> Any:
        return self._run(x, ctx)[0]

    def forward_pass(self, x: Any, ctx: Context) -> tuple[Any, Backprop]:
        result, saved, hx = self._run(x, ctx)
        xp, input_grad, tupled = ctx.xp, ctx.input_grad, isinstance(x, tuple)
        params = self.__dict__["_parameters"]
        names = self._names

        def backprop(dy: Any) -> Any:
            d_output, d_state = dy
            dh_n, dc_n = d_state if self.mode == "LSTM" and d_state is not None else (
                d_state, None)
            dx, dh0, dc0, dweights = rnn_backward(d_output, dh_n, dc_n, saved,
                                                  input_grad=input_grad, xp=xp)
            for group, grads in zip(names, dweights, strict=True):
                for name, grad in zip(group, grads, strict=True):
                    if name is not None:
                        params[name].accumulate_grad(grad)
            if not input_grad:
                return None
            if not tupled:
                return dx
            if self.mode != "LSTM":
                return dx, (None if hx is None else dh0)
            if hx is None:
                return dx, None
            return dx, (None if hx[0] is None else dh0, None if hx[1] is None else dc0)

        return result, backprop


def _zeros_like(a: Array) -> Array:
    return namespace_of(a).zeros_like(a)


_COMMON = """
    Parameters
    ----------
    input_size, hidden_size : int
        I, the width of the input's last axis, and H, of the hidden state.
    num_layers : int
        Stacked layers; layer l > 0 reads layer l − 1's output.{extra}
    bias : bool
        Learn b_ih and b_hh.
    batch_first : bool
        Input and output laid out (N, T, ·) instead of PyTorch's default (T, N, ·); the
        states h0, h_n stay (L·D, N, H), as PyTorch's.
    dropout : float
        Inverted dropout on the output of each layer but the last, in training (masks from the
        layer's :class:`nnbackend.random.Generator` stream, seeded by ``seed``: the same masks on
        every backend; its counter is the layer's extra state, so a checkpoint resumes it).
    bidirectional : bool
        A second set of weights (``*_reverse``) runs from the last step to the first; outputs
        concatenated on the feature axis (D = 2).
    dtype, backend : optional
        The parameters' dtype (float32 by default) and placement, as :class:`Linear`'s.
    seed : int, optional
        Seeds the initialisation (``numpy.random.default_rng(seed)`` on the host: every
        parameter U(−1/√H, 1/√H) in PyTorch's order, bit-identical on every backend) and the
        dropout stream; ``None`` draws one (recorded in the description and extra state).

    Parameters' names and shapes are PyTorch's: for layer k (and ``_reverse``),
    ``weight_ih_lk`` ({gates}·H, I or D·H), ``weight_hh_lk`` ({gates}·H, H), ``bias_ih_lk`` and
    ``bias_hh_lk`` ({gates}·H,), rows in the gate order {order}.

    Input and output
    ----------------
    ``layer(x)`` or ``layer((x, {hx}))``: x (T, N, I) ((N, T, I) with ``batch_first``; (T, I)
    for one sequence), the initial state{s} (L·D, N, H) ((L·D, H) unbatched; zeros when not
    given or None). Returns PyTorch's value, ``{ret}``: output (T, N, D·H), the last layer's
    hidden states at every step, and the final state{s} of every layer and direction
    (L·D, N, H). ``forward`` returns it with ``backprop``, which takes the gradient of the same
    structure, ``{dret}`` (None for a part that gets no gradient), and returns ∂L/∂x, or
    ``(dx, {dhx})`` when the input was a tuple (None for an initial state that was not given).

    The input projections of all steps are one GEMM, each step one GEMM h_{{t−1}} W_hhᵀ plus the
    gates' elementwise work; backpropagation through time stores the gates' gradients so the
    weight gradients are one GEMM each over all steps (see
    :mod:`nnbackend.functional.recurrent` for the equations).

    Differences from PyTorch: initial states come in a tuple with the input (the layer
    protocol takes one argument); ``proj_size`` is refused (NotImplementedError); the dropout
    masks come from nnbackend's own stream, not PyTorch's generator.
"""


class RNN(_RNNBase):
    """Elman RNN: h_t = tanh(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh) (or relu)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        dtype: Any = None,
        backend: Any = None,
        seed: int | None = None,
    ) -> None:
        modes = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}
        if nonlinearity not in modes:
            msg = f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}"
            raise ValueError(msg)
        super().__init__(modes[nonlinearity], input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, 0, dtype, backend, seed)


class LSTM(_RNNBase):
    """Long short-term memory: gates i, f, g, o; c_t = f ⊙ c_{t−1} + i ⊙ g, h_t = o ⊙ tanh c_t."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        *,
        dtype: Any = None,
        backend: Any = None,
        seed: int | None = None,
    ) -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, proj_size, dtype, backend, seed)


class GRU(_RNNBase):
    """Gated recurrent unit: r, z = σ(…), n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),
    h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        dtype: Any = None,
        backend: Any = None,
        seed: int | None = None,
    ) -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, 0, dtype, backend, seed)


RNN.__doc__ = (RNN.__doc__ or "") + "\n" + _COMMON.format(
    extra="\n    nonlinearity : {'tanh', 'relu'}\n        The activation.", gates="1",
    order="(one gate)", hx="h0", s="", ret="(output, h_n)", dret="(d_output, dh_n)",
    dhx="dh0")
LSTM.__doc__ = (LSTM.__doc__ or "") + "\n" + _COMMON.format(
    extra="\n    proj_size : int\n        Only 0 (projections are not supported).", gates="4",
    order="i, f, g, o", hx="(h0, c0)", s="s", ret="(output, (h_n, c_n))",
    dret="(d_output, (dh_n, dc_n))", dhx="(dh0, dc0)")
GRU.__doc__ = (GRU.__doc__ or "") + "\n" + _COMMON.format(
    extra="", gates="3", order="r, z, n", hx="h0", s="", ret="(output, h_n)",
    dret="(d_output, dh_n)", dhx="dh0")


class RecurrentOutput(Module):
    """Keep a recurrent layer's output sequence, or its last step, from its returned tuple.

    ``RNN``, ``LSTM`` and ``GRU`` return PyTorch's ``(output, h_n)`` / ``(output, (h_n,
    c_n))``; in a :class:`~nnbackend.layers.Sequential`, this layer after one passes on an
    array (the ``output, _ = lstm(x)`` and ``output[:, -1]`` of a PyTorch ``forward``)::

        nb.Sequential(nb.Embedding(V, 32), nb.LSTM(32, 64, batch_first=True),
                      nb.RecurrentOutput(), nb.Linear(64, V))        # logits at every step
        nb.Sequential(nb.LSTM(8, 16), nb.RecurrentOutput("last"), nb.Linear(16, 2))

    Parameters
    ----------
    keep : {"sequence", "last"}
        ``"sequence"``: the output (T, N, D·H) as it is; ``"last"``: its last time step
        (N, D·H) (for a bidirectional layer, the reverse direction's part there has seen only
        that step, as PyTorch's ``output[-1]``).
    batch_first : bool
        Where the time axis is for ``"last"``: give the recurrent layer's own setting
        ((N, T, ·) when True). An unbatched (T, ·) output keeps (D·H,).

    Backward: the sequence's gradient goes to ``output`` and None to the final states; for
    ``"last"``, zeros at every other step.
    """

    def __init__(self, keep: str = "sequence", *, batch_first: bool = False) -> None:
        super().__init__()
        if keep not in ("sequence", "last"):
            msg = f"RecurrentOutput: keep must be 'sequence' or 'last', got {keep!r}"
            raise ValueError(msg)
        self.keep = keep
        self.batch_first = check_flag(batch_first, caller="RecurrentOutput", name="batch_first")

    def config(self) -> dict[str, Any]:
        """The constructor's arguments."""
        return {"keep": self.keep, "batch_first": self.batch_first}

    def extra_repr(self) -> str:
        text = repr(self.keep)
        return text + (", batch_first=True" if self.batch_first else "")

    def _output(self, x: Any) -> Array:
        if not (isinstance(x, tuple) and len(x) == 2):
            got = type(x).__name__
            if hasattr(x, "shape"):
                got += f" of shape {tuple(x.shape)} ({describe_placement(x)})"
            msg = f"{self!r} takes a recurrent layer's (output, state) tuple, got {got}"
            raise TypeError(msg)
        output = x[0]
        if self.keep == "last" and output.ndim not in (2, 3):
            msg = f"{self!r}: output of shape {tuple(output.shape)} is not (T, N, F) or (T, F)"
            raise ValueError(msg)
        return output

    def _last(self, output: Array) -> Array:
        if output.ndim == 3 and self.batch_first:
            return output[:, -1, :]
        return output[-1, ...]

    def _validate(self, x: Any) -> Namespace:
        return super()._validate(self._output(x))

    def infer(self, x: Any, ctx: Context) -> Array:
        output = self._output(x)
        return output if self.keep == "sequence" else self._last(output)

    def forward_pass(self, x: Any, ctx: Context) -> tuple[Array, Backprop]:
        output = self._output(x)
        if self.keep == "sequence":
            return output, lambda dy: (dy, None)
        xp = ctx.xp
        shape = tuple(output.shape)

        def backprop(dy: Array) -> Any:
            axis = 1 if len(shape) == 3 and self.batch_first else 0
            rest = list(shape)
            rest[axis] -= 1
            zeros = xp.zeros(tuple(rest), dtype=dy.dtype, device=array_api_compat.device(dy))
            return xp.concat([zeros, xp.expand_dims(dy, axis=axis)], axis=axis), None

        return self._last(output), backprop


def recurrent_state_size(cls: type[_RNNBase]) -> Any:
    """``state_size(config) -> int`` for ``layers.description.register``: the number of
    elements of the weights and biases a ``cls`` built from ``config`` allocates (0 for
    arguments the constructor refuses)."""
    gates = {"LSTM": 4, "GRU": 3}.get(cls.__name__, 1)

    def state_size(config: Mapping[str, Any]) -> int:
        def count(name: str, default: int) -> int:
            value = config.get(name, default)
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            return value if ok else 0

        width, hidden, layers = (count("input_size", 0), count("hidden_size", 0),
                                 count("num_layers", 1))
        directions = 2 if config.get("bidirectional", False) is True else 1
        bias = 2 * gates * hidden if config.get("bias", True) is not False else 0
        total = 0
        for layer in range(layers):
            inputs = width if layer == 0 else directions * hidden
            total += directions * (gates * hidden * (inputs + hidden) + bias)
        return total

    return state_size
