"""Building an ONNX graph: fresh value names, initializers, nodes, and the ``Value`` record a
converter receives and returns.

A converter (see :mod:`nnbackend.onnx._registry`) turns one module into nodes:

>>> def convert_linear(g, module, x, path):
...     w = g.parameter(module.weight, f"{path}.weight")
...     y = g.node("MatMul", [x.name, g.node("Transpose", [w])], hint=path)
...     return x.derive(y, shape=(*x.shape[:-1], module.out_features))

Shapes are tuples of static ints and symbolic strings (``"batch"``, ``"sequence"``) for the
dynamic axes; ``None`` in a converter's shape means "static, as the example output says".
Each ``Value`` also carries the module's example output on the host (``example``), so a
converter can read the static sizes it needs (an adaptive pooling's input size), and on the
model's backend (``array``), which the registry feeds to the next module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ._deps import require

Dim = int | str
"""One axis of a shape: a static size or the name of a dynamic axis."""

_FLOAT_TYPES = {"float32": 1, "float64": 11, "float16": 10}  # onnx.TensorProto's numbers


def elem_type_of(dtype: Any) -> int:
    """The ONNX element type (``onnx.TensorProto.FLOAT``, ...) of a NumPy dtype."""
    onnx = require("onnx")
    return int(onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))


@dataclass(frozen=True)
class Value:
    """A tensor of the graph being built (or a tuple of them, for tuple outputs).

    Attributes
    ----------
    name : str
        The ONNX value name ("" for a tuple).
    elem_type : int
        ONNX element type (``onnx.TensorProto.FLOAT``, ``INT64``, ...); 0 for a tuple.
    shape : tuple of int or str
        Static sizes, and names of the dynamic axes (``"batch"``, ``"sequence"``).
    example : numpy.ndarray or None
        The module's output for the example input, on the host (None until the registry ran
        the module; a tuple's parts hold theirs).
    array : array or None
        The same output on the model's backend: what the next module is run on.
    parts : tuple of Value
        The elements of a tuple output (a recurrent layer's ``(output, h_n)``); empty for a
        tensor.
    """

    name: str
    elem_type: int
    shape: tuple[Dim | None, ...] | None
    example: np.ndarray | None = None
    array: Any = field(default=None, repr=False, compare=False)
    parts: tuple[Value, ...] = ()

    @property
    def ndim(self) -> int:
        """The rank (from the shape, else from the example)."""
        if self.shape is not None:
            return len(self.shape)
        if self.example is not None:
            return int(self.example.ndim)
        msg = f"ONNX export: the rank of {self.name!r} is not known yet"
        raise ValueError(msg)

    @property
    def is_tuple(self) -> bool:
        return bool(self.parts)

    @property
    def static_shape(self) -> tuple[int, ...]:
        """The example's sizes (every axis, the dynamic ones at their example size)."""
        if self.example is None:
            msg = f"ONNX export: {self.name!r} has no example output yet"
            raise ValueError(msg)
        return tuple(int(n) for n in self.example.shape)

    def derive(self, name: str, *, shape: Sequence[Dim | None] | None = None,
               elem_type: int | None = None) -> Value:
        """A new value ``name`` like this one (its element type; its shape unless ``shape``
        is given), without an example: the registry attaches the module's."""
        return Value(name, self.elem_type if elem_type is None else elem_type,
                     tuple(self.shape) if shape is None and self.shape is not None
                     else (None if shape is None else tuple(shape)))

    def with_example(self, example: np.ndarray | None, array: Any) -> Value:
        return replace(self, example=example, array=array)

    @staticmethod
    def tuple_of(*parts: Value) -> Value:
        """A tuple output made of ``parts`` (name "", element type 0)."""
        return Value("", 0, None, parts=tuple(parts))

    def dims(self) -> list[Dim]:
        """The shape with every ``None`` filled from the example."""
        if self.shape is None:
            return list(self.static_shape)
        out: list[Dim] = []
        for i, d in enumerate(self.shape):
            out.append(self.static_shape[i] if d is None else d)
        return out


class GraphBuilder:
    """Collects the nodes, initializers and value names of one ONNX graph.

    Parameters
    ----------
    opset : int
        The default domain's opset the graph is written for (≥ 17).
    dtype : {"float32", "float64"}
        The floating dtype of the exported graph: parameters are cast to it on the host.
    """

    def __init__(self, opset: int = 17, dtype: str = "float32") -> None:
        if dtype not in ("float32", "float64"):
            msg = f"ONNX export: dtype must be 'float32' or 'float64', got {dtype!r}"
            raise ValueError(msg)
        self.opset = int(opset)
        self.dtype: np.dtype[Any] = np.dtype(dtype)
        self.elem_type: int = _FLOAT_TYPES[dtype]
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._used: set[str] = set()
        self._counts: dict[str, int] = {}
        self._parameters: dict[int, tuple[Any, str]] = {}  # id -> (object kept alive, name)
        self._constants: dict[tuple[str, tuple[int, ...], bytes], str] = {}

    # ------------------------------------------------------------------ names

    def reserve(self, name: str) -> str:
        """Claim ``name`` exactly (a graph input's or output's); ValueError if taken."""
        if name in self._used:
            msg = f"ONNX export: the value name {name!r} is used twice"
            raise ValueError(msg)
        self._used.add(name)
        return name

    def name(self, hint: str = "") -> str:
        """A fresh value name derived from ``hint`` (a module path such as ``"0.weight"``)."""
        base = re.sub(r"[^0-9A-Za-z_.:/-]", "_", hint) or "v"
        n = self._counts.get(base, 0)
        candidate = base if n == 0 else f"{base}_{n}"
        while candidate in self._used:
            n += 1
            candidate = f"{base}_{n}"
        self._counts[base] = n + 1
        self._used.add(candidate)
        return candidate

    # ------------------------------------------------------------------ initializers

    def initializer(self, array: np.ndarray, hint: str = "") -> str:
        """Add a host array as an initializer, as it is (its own dtype); return its name."""
        onnx = require("onnx")
        host = np.asarray(array, order="C")  # (ascontiguousarray would make 0-d into (1,))
        name = self.name(hint or "const")
        self.initializers.append(onnx.numpy_helper.from_array(host, name))
        return name

    def parameter(self, param: Any, hint: str = "") -> str:
        """A model parameter (a ``Parameter``, or a backend array such as a buffer) as an
        initializer in the export dtype (integer arrays keep theirs).

        The transfer is the backend's explicit one (``nnbackend.to_numpy``). The same object
        twice (tied weights, a layer used at two places) gives one initializer.
        """
        from nnbackend.backend import to_numpy
        from nnbackend.layers import Parameter

        key = id(param)
        if key in self._parameters:
            return self._parameters[key][1]
        data = param.data if isinstance(param, Parameter) else param
        host = data if isinstance(data, np.ndarray) else to_numpy(data)
        if np.issubdtype(host.dtype, np.floating):
            host = host.astype(self.dtype)
        name = self.initializer(host, hint or "param")
        self._parameters[key] = (param, name)
        return name

    def constant(self, array: Any, hint: str = "") -> str:
        """A constant (shapes and axes as int64, scales as floats), deduplicated by value.

        Python ints and int lists become int64; Python floats and float arrays the export
        dtype; NumPy arrays of another dtype keep it.
        """
        host = np.asarray(array)
        if host.dtype.kind in "iu" and not isinstance(array, np.ndarray):
            host = host.astype(np.int64)
        elif host.dtype.kind == "f" and not isinstance(array, np.ndarray):
            host = host.astype(self.dtype)
        host = np.asarray(host, order="C")  # C order, and 0-d stays 0-d
        key = (host.dtype.str, tuple(host.shape), host.tobytes())
        name = self._constants.get(key)
        if name is None:
            name = self.initializer(host, hint or "const")
            self._constants[key] = name
        return name

    def scalar(self, value: float, hint: str = "") -> str:
        """A 0-d constant in the export dtype."""
        return self.constant(np.asarray(value, dtype=self.dtype), hint)

    # ------------------------------------------------------------------ nodes

    def node(self, op_type: str, inputs: Iterable[str], *, outputs: int | Sequence[str] = 1,
             hint: str = "", domain: str = "", **attributes: Any) -> Any:
        """Add a node; return its output name (or the list of names when ``outputs`` > 1 or a
        list of names to use).

        ``""`` in ``inputs`` leaves an optional input out (ONNX's convention). Attributes are
        ONNX's (``axis=1``, ``transB=1``, ``pads=[...]``); None values are dropped.
        """
        onnx = require("onnx")
        hint = hint or op_type
        if isinstance(outputs, int):
            names = [self.name(f"{hint}:{op_type}" if outputs == 1 else f"{hint}:{op_type}:{i}")
                     for i in range(outputs)]
        else:
            names = [self.reserve(n) for n in outputs]
        attrs = {k: v for k, v in attributes.items() if v is not None}
        self.nodes.append(onnx.helper.make_node(
            op_type, list(inputs), names, name=self.name(f"{hint}/{op_type}"), domain=domain,
            **attrs))
        return names[0] if isinstance(outputs, int) and outputs == 1 else names

    # ------------------------------------------------------------------ the model

    def value_info(self, name: str, value: Value) -> Any:
        """``onnx.ValueInfoProto`` of ``value`` under ``name`` (dynamic axes by name)."""
        onnx = require("onnx")
        dims: list[int | str] = []
        for d in value.dims():
            dims.append(d if isinstance(d, str) else int(d))
        return onnx.helper.make_tensor_value_info(name, value.elem_type, dims)

    def build(self, inputs: Sequence[tuple[str, Value]], outputs: Sequence[tuple[str, Value]],
              *, graph_name: str = "nnbackend", doc: str = "") -> Any:
        """The ``onnx.ModelProto`` of the collected graph with these inputs and outputs."""
        onnx = require("onnx")
        graph = onnx.helper.make_graph(
            self.nodes, graph_name,
            [self.value_info(n, v) for n, v in inputs],
            [self.value_info(n, v) for n, v in outputs],
            initializer=self.initializers, doc_string=doc,
        )
        model = onnx.helper.make_model(
            graph, opset_imports=[onnx.helper.make_opsetid("", self.opset)],
            producer_name="nnbackend", producer_version=_version(),
        )
        model.ir_version = min(model.ir_version, _max_ir_version(self.opset))
        return model


def _version() -> str:
    from nnbackend import __version__

    return __version__


def _max_ir_version(opset: int) -> int:
    """The IR version that goes with ``opset`` (onnx's table), so runtimes that know the
    opset read the file."""
    onnx = require("onnx")
    try:
        return int(onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", opset)]))
    except Exception:
        return int(onnx.IR_VERSION)
