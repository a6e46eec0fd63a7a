"""``export(model, path, example_input)``: a model of the library's layers as an ONNX file.

The walk: the model is put in eval mode (dropout is the identity, batch normalisation uses its
running statistics) and every module's mode is restored afterwards; the example input goes to
the model's backend; :func:`nnbackend.onnx._registry.convert` turns the model into nodes,
running each module on the example so static sizes are known; ``onnx.checker.check_model``
(``full_check=True``: with shape inference) must pass before anything is written; the file is
written to a temporary name beside the target and renamed over it (a failure leaves the old
file, or none, never a partial one).

Dynamic axes: the batch axis always (axis 0, or 1 for a recurrent or attention layer that is
not ``batch_first``; axis 1 of a recurrent layer's initial states (L·D, N, H) either way; none
for one unbatched sequence); with ``dynamic_axes="auto"`` also the sequence axis of models
whose input is a token sequence (integer ids (N, T)), an (N, T, F) sequence into a recurrent,
attention or transformer layer, or one (T, F) sequence into a recurrent layer. A mapping
names them per input, as ``torch.onnx.export``'s: ``{"input": {0: "batch", 1: "sequence"}}``
(or a list of axes, named ``"input_dim1"``...).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_output
from ._deps import require
from ._graph import GraphBuilder, Value, elem_type_of
from ._registry import convert

MIN_OPSET = 17

_SEQUENCE_LAYERS = ("RNN", "LSTM", "GRU", "MultiheadAttention", "TransformerEncoderLayer",
                    "TransformerLM", "Embedding")
_RECURRENT_LAYERS = ("RNN", "LSTM", "GRU")


def export(
    model: Any,
    path: str | os.PathLike[str],
    example_input: Any,
    *,
    opset: int = MIN_OPSET,
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] = ("output",),
    dynamic_axes: str | Mapping[str, Any] | None = "auto",
    dtype: str = "float32",
) -> Any:
    """Export ``model`` to the ONNX file ``path``; return the ``onnx.ModelProto``.

    Parameters
    ----------
    model : Module
        A model of the library's layers (or of layers with a registered converter).
    path : str or path-like
        Where to write (atomically: a temporary file beside it, then a rename).
    example_input : array or tuple of arrays
        An input the model takes, on its backend or as host data (NumPy): it fixes the rank,
        the static sizes and, through the model's outputs, the graph's shapes. Tuples nest as
        the model takes them (an LSTM's ``(x, (h0, c0))``); each array is a graph input, in
        depth-first order.
    opset : int
        The ONNX opset of the default domain, ≥ 17 (LayerNormalization; GELU is written with
        Erf, as opset 17 has no Gelu).
    input_names, output_names : sequence of str
        The graph's input and output names, one per array; a single name for several gives
        ``input``, ``input_1``, ... (``output``, ``output_1``, ... for a tuple output).
    dynamic_axes : None, "auto" or mapping
        None: the batch axis only; ``"auto"`` (the default): the batch axis, and the sequence
        axis of sequence models (see the module docstring); a mapping ``{name: {axis: dim
        name}}`` or ``{name: [axes]}`` adds those (the batch axis stays dynamic).
    dtype : {"float32", "float64"}
        The graph's floating dtype; parameters are cast to it on the host.

    Returns
    -------
    onnx.ModelProto
        The model as written, after ``onnx.checker.check_model(full_check=True)``.

    Raises
    ------
    UnsupportedLayerError
        For a layer without a converter (the message names it and its path in the model).
    ValueError
        For an opset below 17 or above what the installed onnx knows, or names that do not
        fit the inputs and outputs.
    ImportError
        When onnx is not installed (the ``nnbackend[onnx]`` extra).
    """
    onnx = require("onnx")
    opset = _check_opset(opset, onnx)
    g = GraphBuilder(opset, dtype)
    examples = flat_inputs(example_input)
    names = _names(_numbered(input_names, len(examples)), len(examples), "input_names",
                   "inputs")
    backend = _backend(model, examples)
    arrays = [_on_backend(backend, model, e, i) for i, e in enumerate(examples)]
    axes = _dynamic_axes(model, arrays, names, dynamic_axes)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        inputs: list[Value] = []
        for name, array in zip(names, arrays, strict=True):
            host = backend.to_numpy(array)
            elem = g.elem_type if host.dtype.kind == "f" else elem_type_of(np.int64)
            shape = tuple(axes.get(name, {}).get(i, int(n)) for i, n in enumerate(host.shape))
            inputs.append(Value(g.reserve(name), elem, shape, host, array))
        x = _structured(example_input, iter(inputs)) if len(inputs) > 1 else inputs[0]
        y = convert(g, model, x, "")
    finally:
        for module, training in modes:
            object.__setattr__(module, "training", training)
    outs = _flatten(y)
    out_names = _output_names(output_names, len(outs))
    for name, v in zip(out_names, outs, strict=True):
        g.node("Identity", [v.name], outputs=[name], hint=name)
    proto = g.build([(n, v) for n, v in zip(names, inputs, strict=True)],
                    [(n, v) for n, v in zip(out_names, outs, strict=True)],
                    graph_name=type(model).__name__,
                    doc=f"{type(model).__name__} exported by nnbackend")
    onnx.checker.check_model(proto, full_check=True)
    with atomic_output(Path(path)) as file:
        file.write(proto.SerializeToString())
    return proto


def _check_opset(opset: Any, onnx: Any) -> int:
    if isinstance(opset, bool) or not isinstance(opset, int):
        msg = f"ONNX export: opset must be an int, got {opset!r}"
        raise TypeError(msg)
    newest = int(onnx.defs.onnx_opset_version())
    if opset < MIN_OPSET or opset > newest:
        msg = (f"ONNX export: opset {opset} is not supported: nnbackend writes opsets "
               f"{MIN_OPSET} to {newest} (the newest the installed onnx "
               f"{onnx.__version__} knows)")
        raise ValueError(msg)
    return opset


def _names(names: Sequence[str], n: int, what: str, items: str) -> list[str]:
    if isinstance(names, str):
        names = (names,)
    names = list(names)
    if len(names) != n or len(set(names)) != n or not all(isinstance(s, str) and s
                                                           for s in names):
        msg = (f"ONNX export: {what} must be {n} distinct non-empty names (the model has {n} "
               f"{items}), got {names!r}")
        raise ValueError(msg)
    return names


def _numbered(names: Sequence[str], n: int) -> list[str]:
    """One name for n > 1 values becomes ``name``, ``name_1``, ...; others stay as given."""
    names = [names] if isinstance(names, str) else list(names)
    if len(names) == 1 and n > 1:
        names = [names[0]] + [f"{names[0]}_{i}" for i in range(1, n)]
    return names


def _output_names(names: Sequence[str], n: int) -> list[str]:
    return _names(_numbered(names, n), n, "output_names", "outputs")


def flat_inputs(example: Any) -> tuple[Any, ...]:
    """The leaves of an input: ``x`` → (x,), (x, h0) → (x, h0), (x, (h0, c0)) → (x, h0, c0)
    (tuples nest; lists and arrays are data), one graph input each, depth first."""
    if not isinstance(example, tuple):
        return (example,)
    return tuple(leaf for part in example for leaf in flat_inputs(part))


def _structured(example: Any, leaves: Iterator[Value]) -> Value:
    """The inputs' Values nested as ``example`` nests its arrays."""
    if not isinstance(example, tuple):
        return next(leaves)
    return Value.tuple_of(*(_structured(part, leaves) for part in example))


def _flatten(v: Value) -> list[Value]:
    if v.is_tuple:
        return [leaf for part in v.parts for leaf in _flatten(part)]
    return [v]


def _backend(model: Any, examples: Sequence[Any]) -> Any:
    """The model's backend; for a model without parameters, the example's (or NumPy's)."""
    from nnbackend.backend import backend_of, get_backend

    be = model.backend
    if be is not None:
        return be
    for e in examples:
        if not isinstance(e, np.ndarray | list | int | float):
            with contextlib.suppress(Exception):
                return backend_of(e)
    return get_backend("numpy")


def _on_backend(backend: Any, model: Any, example: Any, i: int) -> Any:
    """The example on the model's backend: host data transferred, floats in the model's
    dtype (cast on the device for a backend array, as ``predict`` does), integers as they
    are (host ones in the backend's index dtype)."""
    ref = model._reference_array()
    if backend.holds(example):
        if ref is not None and _kind(example) == "f" and example.dtype != ref.dtype:
            return backend.asarray(example, dtype=ref.dtype)
        return example
    if not isinstance(example, np.ndarray | list | tuple | int | float):
        msg = (f"ONNX export: example input {i} is a {type(example).__name__}, neither host "
               f"data (NumPy) nor an array on the model's backend ({backend})")
        raise TypeError(msg)
    host = np.asarray(example)
    if host.dtype.kind == "f":
        return backend.asarray(host, dtype=None if ref is None else ref.dtype)
    if host.dtype.kind in "iub":
        return backend.asarray(host, dtype=backend.index_dtype if host.dtype.kind != "b"
                               else None)
    msg = f"ONNX export: example input {i} has dtype {host.dtype}, not floating or integer"
    raise TypeError(msg)


def _first_leaf(model: Any) -> Any:
    """The first module that computes (through Sequentials, combinators, language models)."""
    module = model
    while True:
        children = list(module.children())
        if not children or type(module).__name__ in _SEQUENCE_LAYERS:
            return module
        module = children[0]


def _dynamic_axes(model: Any, arrays: Sequence[Any], names: Sequence[str],
                  spec: str | Mapping[str, Any] | None) -> dict[str, dict[int, str]]:
    """{input name: {axis: dimension name}} for the dynamic axes of each input."""
    first = _first_leaf(model)
    batch_axis = 1 if getattr(first, "batch_first", True) is False else 0
    recurrent = type(first).__name__ in _RECURRENT_LAYERS
    out: dict[str, dict[int, str]] = {}
    for i, (name, a) in enumerate(zip(names, arrays, strict=True)):
        axes: dict[int, str] = {}
        if recurrent:
            # batched: x (N, T, F) or (T, N, F), and the initial states (L·D, N, H), whose
            # batch axis is 1 whatever batch_first says (PyTorch's layout); an unbatched
            # sequence (T, F) with states (L·D, H) has none
            if a.ndim == 3:
                axes[batch_axis if i == 0 else 1] = "batch"
        elif a.ndim >= 2:  # (a single sample (F,) has no batch axis)
            axes[batch_axis] = "batch"
        out[name] = axes
    if spec is None:
        return out
    if isinstance(spec, str):
        if spec != "auto":
            msg = f"ONNX export: dynamic_axes must be None, 'auto' or a mapping, got {spec!r}"
            raise ValueError(msg)
        name, a = names[0], arrays[0]
        integer = _kind(a) in "iu"
        sequence_layer = type(first).__name__ in _SEQUENCE_LAYERS
        if recurrent and a.ndim == 2:  # one unbatched sequence (T, F)
            out[name][0] = "sequence"
        elif (integer and a.ndim >= 2) or (sequence_layer and a.ndim == 3):
            out[name][1 - batch_axis] = "sequence"
        return out
    for key, axes_spec in spec.items():
        if key not in out:
            msg = (f"ONNX export: dynamic_axes names {key!r}, which is not an input "
                   f"({list(names)}); dynamic output axes follow from the inputs'")
            raise ValueError(msg)
        ndim = arrays[list(names).index(key)].ndim
        items = axes_spec.items() if isinstance(axes_spec, Mapping) else \
            ((ax, f"{key}_dim{ax}") for ax in axes_spec)
        for ax, dim in items:
            ax = int(ax)
            if not -ndim <= ax < ndim:
                msg = f"ONNX export: dynamic axis {ax} of {key!r} is out of range for rank {ndim}"
                raise ValueError(msg)
            out[key][ax % ndim] = str(dim)
    return out


def _kind(a: Any) -> str:
    from nnbackend.backend import dtype_name

    return np.dtype(dtype_name(a.dtype)).kind
