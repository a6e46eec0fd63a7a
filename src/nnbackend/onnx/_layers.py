"""ONNX converters of the library's feed-forward layers (sequence layers: ``_sequence.py``).

Each converter writes the layer's eval-mode computation in opset-17 operators, as the layer's
docstring defines it:

=================  ==========================================================================
Linear             Gemm(x, W, b, transB=1) for (N, F) inputs; MatMul(x, Wᵀ) + b for (N, ..., F)
activations        Relu, LeakyRelu, Sigmoid, Tanh, Softmax / LogSoftmax (axis);
                   GELU: x·½(1 + Erf(x/√2)), or ½x(1 + tanh(√(2/π)(x + 0.044715x³)));
                   SiLU: x·σ(x); Softplus: x where βx > threshold, else
                   (max(βx, 0) + log(1 + e^{−|βx|}))/β (stable for any x)
containers         Sequential (in order), Residual (x + f(x)), Parallel (Add or Concat)
Flatten/Unflatten  Reshape (a static target, or one built from Shape(x) for dynamic axes)
Dropout(2d)        the identity (eval mode)
Conv1d/Conv2d      Conv (pads as PyTorch's: "same" puts the odd one after)
pooling            MaxPool / AveragePool (ceil_mode, count_include_pad; divisor_override as
                   a rescaled count_include_pad average where every window is whole);
                   AdaptiveAvgPool2d: GlobalAveragePool, an AveragePool for dividing sizes,
                   else a ReduceMean per window and Concat (from the static input size)
BatchNorm          BatchNormalization with the running statistics; without them (eval with
                   track_running_stats=False): the batch's mean and biased variance
LayerNorm          LayerNormalization over the trailing normalized_shape axes
RMSNorm            x / √(mean(x²) + eps) · γ (eps None: the dtype's machine epsilon)
=================  ==========================================================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from nnbackend.layers import (
    GELU,
    AdaptiveAvgPool2d,
    AvgPool1d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv1d,
    Conv2d,
    Dropout,
    Dropout2d,
    Flatten,
    Identity,
    LayerNorm,
    LeakyReLU,
    Linear,
    LogSoftmax,
    MaxPool1d,
    MaxPool2d,
    Parallel,
    ReLU,
    Residual,
    RMSNorm,
    Sequential,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    SyncBatchNorm,
    Tanh,
    Unflatten,
)

from ._graph import Dim, GraphBuilder, Value
from ._registry import UnsupportedLayerError, convert, converter


def child_path(path: str, name: str | int) -> str:
    """The dotted path of a sub-module (``"3.block"``; ``"0"`` under the model itself)."""
    return f"{path}.{name}" if path else str(name)


def _hint(path: str, what: str) -> str:
    return child_path(path, what) if path else what


def _refuse(module: Any, path: str, why: str) -> UnsupportedLayerError:
    where = f"at {path!r}" if path else "(the model itself)"
    return UnsupportedLayerError(
        f"ONNX export: {type(module).__name__} {where} ({module!r}) cannot be exported: {why}")


def reduce(g: GraphBuilder, op: str, x: str, axes: Sequence[int], hint: str,
           keepdims: int = 1) -> str:
    """A Reduce* node over ``axes``: an attribute up to opset 17, an input from opset 18."""
    if g.opset >= 18:
        return str(g.node(op, [x, g.constant(list(axes), _hint(hint, "axes"))],
                          keepdims=keepdims, hint=hint))
    return str(g.node(op, [x], axes=list(axes), keepdims=keepdims, hint=hint))


# ---------------------------------------------------------------------- Linear


@converter(Linear)
def _linear(g: GraphBuilder, m: Linear, x: Value, path: str) -> Value:
    w = g.parameter(m.weight, _hint(path, "weight"))
    b = g.parameter(m.bias, _hint(path, "bias")) if m.bias is not None else ""
    shape = (*x.dims()[:-1], m.out_features)
    if x.ndim == 2:
        y = g.node("Gemm", [x.name, w, b] if b else [x.name, w], transB=1, hint=path)
        return x.derive(y, shape=shape)
    y = g.node("MatMul", [x.name, g.node("Transpose", [w], perm=[1, 0], hint=path)], hint=path)
    if b:
        y = g.node("Add", [y, b], hint=path)
    return x.derive(y, shape=shape)


# ---------------------------------------------------------------------- activations


@converter(Identity, Dropout, Dropout2d)
def _identity(g: GraphBuilder, m: Any, x: Value, path: str) -> Value:
    # Dropout is the identity in eval mode, in which export runs.
    return x


def _unary(op: str) -> Any:
    def convert_unary(g: GraphBuilder, m: Any, x: Value, path: str) -> Value:
        return x.derive(g.node(op, [x.name], hint=path))

    return convert_unary


converter(ReLU)(_unary("Relu"))
converter(Sigmoid)(_unary("Sigmoid"))
converter(Tanh)(_unary("Tanh"))


@converter(LeakyReLU)
def _leaky_relu(g: GraphBuilder, m: LeakyReLU, x: Value, path: str) -> Value:
    return x.derive(g.node("LeakyRelu", [x.name], alpha=float(m.negative_slope), hint=path))


@converter(Softmax)
def _softmax(g: GraphBuilder, m: Softmax, x: Value, path: str) -> Value:
    return x.derive(g.node("Softmax", [x.name], axis=int(m.axis), hint=path))


@converter(LogSoftmax)
def _log_softmax(g: GraphBuilder, m: LogSoftmax, x: Value, path: str) -> Value:
    return x.derive(g.node("LogSoftmax", [x.name], axis=int(m.axis), hint=path))


@converter(GELU)
def _gelu(g: GraphBuilder, m: GELU, x: Value, path: str) -> Value:
    return x.derive(gelu(g, x.name, m.approximate, path))


def gelu(g: GraphBuilder, x: str, approximate: str, hint: str) -> str:
    """GELU in opset-17 operators (opset 17 has no Gelu): exact ``"none"`` or ``"tanh"``."""
    if approximate == "tanh":
        cube = g.node("Mul", [g.node("Mul", [x, x], hint=hint), x], hint=hint)
        inner = g.node("Add", [x, g.node("Mul", [cube, g.scalar(0.044715)], hint=hint)],
                       hint=hint)
        t = g.node("Tanh", [g.node("Mul", [inner, g.scalar(math.sqrt(2.0 / math.pi))],
                                   hint=hint)], hint=hint)
        gate = g.node("Add", [t, g.scalar(1.0)], hint=hint)
    else:
        e = g.node("Erf", [g.node("Mul", [x, g.scalar(1.0 / math.sqrt(2.0))], hint=hint)],
                   hint=hint)
        gate = g.node("Add", [e, g.scalar(1.0)], hint=hint)
    half = g.node("Mul", [x, g.scalar(0.5)], hint=hint)
    return str(g.node("Mul", [half, gate], hint=hint))


@converter(SiLU)
def _silu(g: GraphBuilder, m: SiLU, x: Value, path: str) -> Value:
    return x.derive(g.node("Mul", [x.name, g.node("Sigmoid", [x.name], hint=path)], hint=path))


@converter(Softplus)
def _softplus(g: GraphBuilder, m: Softplus, x: Value, path: str) -> Value:
    beta, threshold = float(m.beta), float(m.threshold)
    z = x.name if beta == 1.0 else g.node("Mul", [x.name, g.scalar(beta)], hint=path)
    # max(z, 0) + log(1 + e^{-|z|}): no overflow for large z, no 1 + e^z rounding to e^z.
    tail = g.node("Log", [g.node("Add", [g.scalar(1.0), g.node(
        "Exp", [g.node("Neg", [g.node("Abs", [z], hint=path)], hint=path)], hint=path)],
        hint=path)], hint=path)
    sp = g.node("Add", [g.node("Relu", [z], hint=path), tail], hint=path)
    if beta != 1.0:
        sp = g.node("Div", [sp, g.scalar(beta)], hint=path)
    above = g.node("Greater", [z, g.scalar(threshold)], hint=path)
    return x.derive(g.node("Where", [above, x.name, sp], hint=path))


# ---------------------------------------------------------------------- containers


@converter(Sequential)
def _sequential(g: GraphBuilder, m: Sequential, x: Value, path: str) -> Value:
    for i, layer in enumerate(m.layers):
        x = convert(g, layer, x, child_path(path, i))
    return x


@converter(Residual)
def _residual(g: GraphBuilder, m: Residual, x: Value, path: str) -> Value:
    fx = convert(g, m.block, x, child_path(path, "block"))
    return x.derive(g.node("Add", [x.name, fx.name], hint=path), shape=_merged(x, fx))


def _merged(a: Value, b: Value) -> tuple[Dim | None, ...]:
    """The shape of a + b (same shapes): a symbolic axis where either side has one."""
    return tuple(p if isinstance(p, str) else q for p, q in zip(a.dims(), b.dims(), strict=True))


@converter(Parallel)
def _parallel(g: GraphBuilder, m: Parallel, x: Value, path: str) -> Value:
    outs = [convert(g, b, x, child_path(path, i)) for i, b in enumerate(m.branches)]
    if m.merge == "add":
        y, shape = outs[0].name, list(outs[0].dims())
        for o in outs[1:]:
            y = g.node("Add", [y, o.name], hint=path)
            shape = [p if isinstance(p, str) else q for p, q in zip(shape, o.dims(), strict=True)]
        return outs[0].derive(y, shape=shape)
    ndim = outs[0].ndim
    axis = m.axis % ndim
    dims: list[Dim | None] = list(outs[0].dims())
    sizes = [o.dims()[axis] for o in outs]
    dims[axis] = sum(sizes) if all(isinstance(s, int) for s in sizes) else None  # type: ignore[arg-type]
    if dims[axis] is None:
        dims[axis] = "+".join(str(s) for s in sizes)
    return outs[0].derive(g.node("Concat", [o.name for o in outs], axis=axis, hint=path),
                          shape=dims)


# ---------------------------------------------------------------------- reshaping


def reshape(g: GraphBuilder, x: Value, spec: Sequence[tuple[Any, ...]], hint: str) -> str:
    """Reshape ``x`` to the shape ``spec`` describes, axis by axis: ``("static", n)``,
    ``("copy", i)`` (x's axis i), ``("prod", i, j)`` (the product of x's axes i..j-1).

    A target without dynamic sizes is a constant (copies of an axis at its own index as 0,
    one remaining dynamic axis as -1); otherwise it is computed from Shape(x).
    """
    dims = x.dims()
    simple: list[int | None] = []
    for k, s in enumerate(spec):
        if s[0] == "copy" and isinstance(dims[s[1]], int):
            s = ("static", dims[s[1]])
        if s[0] == "prod" and all(isinstance(d, int) for d in dims[s[1]:s[2]]):
            s = ("static", int(np.prod([int(d) for d in dims[s[1]:s[2]]], dtype=np.int64)))
        if s[0] == "static":
            simple.append(int(s[1]))
        elif s[0] == "copy" and s[1] == k:
            simple.append(0)
        else:
            simple.append(None)
    if simple.count(None) <= 1:
        target = g.constant([-1 if n is None else n for n in simple], _hint(hint, "shape"))
    else:
        shape = g.node("Shape", [x.name], hint=hint)
        pieces = []
        for s in spec:
            if s[0] == "static":
                pieces.append(g.constant([int(s[1])], _hint(hint, "dim")))
            elif s[0] == "copy":
                pieces.append(g.node("Slice", [shape, g.constant([s[1]]), g.constant([s[1] + 1])],
                                     hint=hint))
            else:
                part = g.node("Slice", [shape, g.constant([s[1]]), g.constant([s[2]])], hint=hint)
                pieces.append(g.node("ReduceProd", [part], keepdims=1, hint=hint))
        target = g.node("Concat", pieces, axis=0, hint=hint)
    return str(g.node("Reshape", [x.name, target], hint=hint))


def _spec_dims(x: Value, spec: Sequence[tuple[Any, ...]]) -> list[Dim | None]:
    dims = x.dims()
    out: list[Dim | None] = []
    for s in spec:
        if s[0] == "static":
            out.append(int(s[1]))
        elif s[0] == "copy":
            out.append(dims[s[1]])
        else:
            group = dims[s[1]:s[2]]
            out.append(None if all(isinstance(d, int) for d in group)
                       else "*".join(str(d) for d in group))
    return out


@converter(Flatten)
def _flatten(g: GraphBuilder, m: Flatten, x: Value, path: str) -> Value:
    n = x.ndim
    start, end = m.start_dim % n, m.end_dim % n
    spec = [("copy", i) for i in range(start)] + [("prod", start, end + 1)] + \
        [("copy", i) for i in range(end + 1, n)]
    return x.derive(reshape(g, x, spec, path), shape=_spec_dims(x, spec))


@converter(Unflatten)
def _unflatten(g: GraphBuilder, m: Unflatten, x: Value, path: str) -> Value:
    n, dims = x.ndim, x.dims()
    dim = m.dim % n
    sizes = list(m.unflattened_size)
    d = dims[dim]
    if -1 in sizes and isinstance(d, int):
        sizes[sizes.index(-1)] = d // int(np.prod([s for s in sizes if s != -1]))
    if -1 not in sizes:
        spec: list[tuple[Any, ...]] = [("copy", i) for i in range(dim)]
        spec += [("static", s) for s in sizes]
        spec += [("copy", i) for i in range(dim + 1, n)]
        return x.derive(reshape(g, x, spec, path), shape=_spec_dims(x, spec))
    # A dynamic axis split with an inferred part: the target a constant with -1 there, the
    # leading axes copied (0), the trailing ones static.
    if any(isinstance(t, str) for t in dims[dim + 1:]):
        raise _refuse(m, path, "an inferred size (-1) of a dynamic axis followed by other "
                      "dynamic axes")
    target = [0] * dim + sizes + [int(t) for t in dims[dim + 1:]]
    y = g.node("Reshape", [x.name, g.constant(target, _hint(path, "shape"))], hint=path)
    known = int(np.prod([s for s in sizes if s != -1]))
    shape: list[Dim | None] = [*dims[:dim], *(f"{d}/{known}" if s == -1 else s for s in sizes),
                               *dims[dim + 1:]]
    return x.derive(y, shape=shape)


# ---------------------------------------------------------------------- convolution


def _spatial(dims: Sequence[Dim], keeps: Sequence[bool], path: str) -> list[Dim | None]:
    """Output spatial axes: static ones from the example (None); a dynamic one keeps its
    name where the window keeps the size, else gets a new name (``"length@0"``)."""
    return [None if isinstance(d, int) else (d if keep else f"{d}@{path}")
            for d, keep in zip(dims, keeps, strict=True)]


def _batched(m: Any, x: Value, path: str, rank: int, what: str) -> None:
    if x.ndim != rank:
        raise _refuse(m, path, f"the export takes batched input {what}, got rank {x.ndim} "
                      f"(shape {tuple(x.dims())})")


@converter(Conv1d, Conv2d)
def _conv(g: GraphBuilder, m: Any, x: Value, path: str) -> Value:
    spatial = len(m.kernel_size)
    _batched(m, x, path, spatial + 2, "(N, C, L)" if spatial == 1 else "(N, C, H, W)")
    kernel, stride, dilation = list(m.kernel_size), list(m.stride), list(m.dilation)
    if m.padding == "valid":
        lo = hi = [0] * spatial
    elif m.padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        lo, hi = [t // 2 for t in totals], [t - t // 2 for t in totals]  # the odd one after
    else:
        lo = hi = [int(p) for p in m.padding]
    w = g.parameter(m.weight, _hint(path, "weight"))
    inputs = [x.name, w] + ([g.parameter(m.bias, _hint(path, "bias"))] if m.bias is not None
                            else [])
    y = g.node("Conv", inputs, kernel_shape=kernel, strides=stride, dilations=dilation,
               pads=[*lo, *hi], group=int(m.groups), hint=path)
    keeps = [s == 1 and lo_ + hi_ == d * (k - 1)
             for s, lo_, hi_, d, k in zip(stride, lo, hi, dilation, kernel, strict=True)]
    return x.derive(y, shape=(x.dims()[0], m.out_channels,
                              *_spatial(x.dims()[2:], keeps, path)))


# ---------------------------------------------------------------------- pooling


def _pool_sizes(n: int, k: int, s: int, p: int, d: int) -> tuple[int, int]:
    """(PyTorch's, ONNX's) ceil_mode output size of one axis: ONNX keeps a last window that
    starts in the right padding, PyTorch drops it."""
    onnx_size = -(-(n + 2 * p - d * (k - 1) - 1) // s) + 1
    return (onnx_size - 1 if (onnx_size - 1) * s >= n + p else onnx_size), onnx_size


@converter(MaxPool1d, MaxPool2d, AvgPool1d, AvgPool2d)
def _pool(g: GraphBuilder, m: Any, x: Value, path: str) -> Value:
    a = m._args  # parsed: pairs for two spatial axes (1-d pooling as (1, k) windows)
    one = a.dims == 1
    _batched(m, x, path, a.dims + 2, "(N, C, L)" if one else "(N, C, H, W)")

    def pick(pair: Sequence[int]) -> list[int]:
        return [int(pair[1])] if one else [int(v) for v in pair]

    kernel, stride, pad, dilation = pick(a.kernel), pick(a.stride), pick(a.padding), \
        pick(a.dilation)
    attrs: dict[str, Any] = {"kernel_shape": kernel, "strides": stride, "pads": pad + pad,
                             "ceil_mode": int(a.ceil_mode)}
    dims = x.dims()
    keeps = [k == 1 and st == 1 and p == 0 for k, st, p in zip(kernel, stride, pad, strict=True)]
    shape = (dims[0], dims[1], *_spatial(dims[2:], keeps, path))
    ends: list[int] | None = None
    if a.ceil_mode:
        if any(isinstance(d, str) for d in dims[2:]):
            raise _refuse(m, path, "ceil_mode on a dynamic spatial axis (PyTorch's and ONNX's "
                          "output sizes differ for some sizes)")
        sizes = [_pool_sizes(int(n), *kspd) for n, *kspd in
                 zip(dims[2:], kernel, stride, pad, dilation, strict=True)]
        if any(t != o for t, o in sizes):
            ends = [t for t, _ in sizes]
    if a.kind == "max":
        y = g.node("MaxPool", [x.name], dilations=dilation, **attrs, hint=path)
    elif a.divisor_override is None:
        y = g.node("AveragePool", [x.name], count_include_pad=int(a.count_include_pad),
                   **attrs, hint=path)
    else:
        # sum / d = (the count_include_pad mean) · K / d, where every window holds K
        # elements: so only without ceil_mode windows that run past the padding.
        for n, k, st, p in zip(x.static_shape[2:], kernel, stride, pad, strict=True):
            if a.ceil_mode and (n + 2 * p - k) % st:
                raise _refuse(m, path, "divisor_override with ceil_mode windows that extend "
                              "past the padding (ONNX's AveragePool has no divisor)")
        y = g.node("AveragePool", [x.name], count_include_pad=1, **attrs, hint=path)
        y = g.node("Mul", [y, g.scalar(float(np.prod(kernel)) / float(a.divisor_override))],
                   hint=path)
    if ends is not None:  # PyTorch's last window dropped where ONNX keeps it
        axes = list(range(2, 2 + a.dims))
        y = g.node("Slice", [y, g.constant([0] * a.dims), g.constant(ends), g.constant(axes)],
                   hint=path)
    return x.derive(y, shape=shape)


def _adaptive_sizes(requested: Any, hw: tuple[int, int]) -> tuple[int, int]:
    pair = requested if isinstance(requested, tuple | list) else (requested, requested)
    oh, ow = (n if o is None else int(o) for o, n in zip(pair, hw, strict=True))
    return oh, ow


@converter(AdaptiveAvgPool2d)
def _adaptive_avg_pool(g: GraphBuilder, m: AdaptiveAvgPool2d, x: Value, path: str) -> Value:
    _batched(m, x, path, 4, "(N, C, H, W)")
    h, w = x.static_shape[2:]
    if any(isinstance(d, str) for d in x.dims()[2:]):
        raise _refuse(m, path, "adaptive windows need static spatial sizes")
    oh, ow = _adaptive_sizes(m.output_size, (h, w))
    shape = (x.dims()[0], x.dims()[1], oh, ow)
    if (oh, ow) == (1, 1):
        return x.derive(g.node("GlobalAveragePool", [x.name], hint=path), shape=shape)
    if h % oh == 0 and w % ow == 0:
        kernel = [h // oh, w // ow]
        y = g.node("AveragePool", [x.name], kernel_shape=kernel, strides=kernel, hint=path)
        return x.derive(y, shape=shape)
    # PyTorch's windows rows [⌊iH/OH⌋, ⌈(i+1)H/OH⌉): a ReduceMean per window, concatenated.
    rows = []
    for i in range(oh):
        r0, r1 = (i * h) // oh, -(-((i + 1) * h) // oh)
        cols = []
        for j in range(ow):
            c0, c1 = (j * w) // ow, -(-((j + 1) * w) // ow)
            window = g.node("Slice", [x.name, g.constant([r0, c0]), g.constant([r1, c1]),
                                      g.constant([2, 3])], hint=path)
            cols.append(reduce(g, "ReduceMean", window, [2, 3], path))
        rows.append(cols[0] if len(cols) == 1 else g.node("Concat", cols, axis=3, hint=path))
    y = rows[0] if len(rows) == 1 else g.node("Concat", rows, axis=2, hint=path)
    return x.derive(y, shape=shape)


# ---------------------------------------------------------------------- normalisation


@converter(BatchNorm1d, BatchNorm2d, SyncBatchNorm)
def _batch_norm(g: GraphBuilder, m: Any, x: Value, path: str) -> Value:
    c = int(m.num_features)
    affine = m.weight is not None
    scale = g.parameter(m.weight, _hint(path, "weight")) if affine else \
        g.constant(np.ones(c, dtype=g.dtype), _hint(path, "ones"))
    bias = g.parameter(m.bias, _hint(path, "bias")) if affine and m.bias is not None else \
        g.constant(np.zeros(c, dtype=g.dtype), _hint(path, "zeros"))
    if m.running_mean is not None:
        mean = g.parameter(m.running_mean, _hint(path, "running_mean"))
        var = g.parameter(m.running_var, _hint(path, "running_var"))
        y = g.node("BatchNormalization", [x.name, scale, bias, mean, var],
                   epsilon=float(m.eps), hint=path)
        return x.derive(y)
    # Eval without running statistics normalises with the batch's own (PyTorch's rule):
    # μ = mean over (N, L...), σ² the biased variance, per channel.
    axes = [0, *range(2, x.ndim)]
    mu = reduce(g, "ReduceMean", x.name, axes, path)
    centred = g.node("Sub", [x.name, mu], hint=path)
    var = reduce(g, "ReduceMean", g.node("Mul", [centred, centred], hint=path), axes, path)
    inv = g.node("Reciprocal", [g.node("Sqrt", [g.node("Add", [var, g.scalar(float(m.eps))],
                                                       hint=path)], hint=path)], hint=path)
    bshape = g.constant([1, c] + [1] * (x.ndim - 2), _hint(path, "channel_shape"))
    y = g.node("Mul", [centred, inv], hint=path)
    y = g.node("Mul", [y, g.node("Reshape", [scale, bshape], hint=path)], hint=path)
    y = g.node("Add", [y, g.node("Reshape", [bias, bshape], hint=path)], hint=path)
    return x.derive(y)


@converter(LayerNorm)
def _layer_norm(g: GraphBuilder, m: LayerNorm, x: Value, path: str) -> Value:
    shape = tuple(m.normalized_shape)
    axis = x.ndim - len(shape)
    scale = g.parameter(m.weight, _hint(path, "weight")) if m.weight is not None else \
        g.constant(np.ones(shape, dtype=g.dtype), _hint(path, "ones"))
    inputs = [x.name, scale]
    if m.bias is not None:
        inputs.append(g.parameter(m.bias, _hint(path, "bias")))
    y = g.node("LayerNormalization", inputs, axis=axis, epsilon=float(m.eps or 0.0), hint=path)
    return x.derive(y)


@converter(RMSNorm)
def _rms_norm(g: GraphBuilder, m: RMSNorm, x: Value, path: str) -> Value:
    k = len(tuple(m.normalized_shape))
    # eps None: the machine epsilon of the model's dtype, which the example has.
    dt = x.example.dtype if x.example is not None else g.dtype
    eps = float(np.finfo(dt).eps) if m.eps is None else float(m.eps)
    axes = list(range(x.ndim - k, x.ndim))
    ms = reduce(g, "ReduceMean", g.node("Mul", [x.name, x.name], hint=path), axes, path)
    rms = g.node("Sqrt", [g.node("Add", [ms, g.scalar(eps)], hint=path)], hint=path)
    y = g.node("Div", [x.name, rms], hint=path)
    if m.weight is not None:
        y = g.node("Mul", [y, g.parameter(m.weight, _hint(path, "weight"))], hint=path)
    return x.derive(y)
