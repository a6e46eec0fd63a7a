"""ONNX export of models built from the library's layers.

>>> import nnbackend.onnx
>>> nnbackend.onnx.export(model, "model.onnx", X[:8])        # doctest: +SKIP
>>> nnbackend.onnx.run("model.onnx", X)                      # doctest: +SKIP

``export`` writes a checked ONNX file (opset ≥ 17, dynamic batch axis, dynamic sequence axis
for sequence models) whose outputs match the model's in eval mode; ``run`` evaluates a file or
``ModelProto`` with onnxruntime. A layer without a converter raises
:class:`UnsupportedLayerError` naming it and its path in the model; :func:`converter`
registers one for a layer of your own (see :mod:`nnbackend.onnx._registry`).

The ``onnx`` and ``onnxruntime`` packages are the optional extra ``nnbackend[onnx]``; this
package imports them on first use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import array_api_compat
import numpy as np

from ..backend import to_numpy
from ._export import MIN_OPSET, export, flat_inputs
from ._graph import GraphBuilder, Value
from ._registry import UnsupportedLayerError, convert, converter, supported_layers

__all__ = [
    "MIN_OPSET",
    "GraphBuilder",
    "UnsupportedLayerError",
    "Value",
    "convert",
    "converter",
    "export",
    "run",
    "supported_layers",
]


def run(model: str | os.PathLike[str] | Any, x: Any | Mapping[str, Any]) -> Any:
    """Run an ONNX model (a path or an ``onnx.ModelProto``) with onnxruntime on the CPU.

    Parameters
    ----------
    model : path or onnx.ModelProto
    x : array, tuple of them, or mapping {input name: array}
        The input(s) in the graph's order (a nested tuple, such as an LSTM's ``(x, (h0,
        c0))``, in depth-first order), host data or arrays of any backend (copied to the host
        explicitly, :func:`nnbackend.to_numpy`); floats are cast to the graph's input dtype,
        integers to int64.

    Returns
    -------
    numpy.ndarray or tuple of numpy.ndarray
        The output, or the outputs in the graph's order when there are several.
    """
    from ._deps import require

    ort = require("onnxruntime")
    source = model if isinstance(model, str | os.PathLike) else model.SerializeToString()
    session = ort.InferenceSession(source if not isinstance(source, os.PathLike)
                                   else os.fspath(source), providers=["CPUExecutionProvider"])
    graph_inputs = session.get_inputs()
    if isinstance(x, Mapping):
        feeds = dict(x)
    else:
        feeds = {i.name: v for i, v in zip(graph_inputs, flat_inputs(x), strict=True)}
    for info in graph_inputs:
        feeds[info.name] = _cast(_host(feeds[info.name]), info.type)
    outs = session.run(None, feeds)
    return outs[0] if len(outs) == 1 else tuple(outs)


def _cast(a: np.ndarray, ort_type: str) -> np.ndarray:
    target = {"tensor(float)": np.float32, "tensor(double)": np.float64,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32}.get(ort_type)
    return a if target is None else np.asarray(a, dtype=target, order="C")  # 0-d stays 0-d


def _host(value: Any) -> np.ndarray:
    """``value`` as a NumPy array: host data as it is, a backend's array by its explicit copy
    (never an implicit conversion, which CuPy and PyTorch's CUDA tensors refuse)."""
    if isinstance(value, np.ndarray) or not array_api_compat.is_array_api_obj(value):
        return np.asarray(value)
    return to_numpy(value)
