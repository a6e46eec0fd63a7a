"""Which function turns which layer into ONNX nodes, and the walk that calls them.

A converter is ``f(g, module, x, path) -> Value``: ``g`` the :class:`GraphBuilder`, ``module``
the layer, ``x`` its input (a :class:`Value`), ``path`` the layer's dotted name in the model
(``"3.block.0"``; "" for the model itself). It adds nodes and returns the output value; the
shape may hold ``None`` for static axes, which :func:`convert` fills from the example output.

:func:`convert` dispatches on the module's class through its MRO, so a subclass that keeps its
parent's computation is converted as the parent; a subclass that overrides the computation
(``forward_pass`` or ``infer``) without a converter of its own is refused, since exporting it
as its parent would silently compute something else. After the converter, the module runs in
eval mode on the example input, and its output (on the host and on the backend) is attached to
the returned value: the next converter knows the static sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ._graph import GraphBuilder, Value, elem_type_of

Converter = Callable[[GraphBuilder, Any, Value, str], Value]
F = TypeVar("F", bound=Converter)

_CONVERTERS: dict[type, Converter] = {}


class UnsupportedLayerError(NotImplementedError):
    """A layer of the model has no ONNX converter (a user-defined layer, say).

    The message names the layer's class, its path in the model, and the supported layers;
    ``nnbackend.onnx.converter(LayerClass)`` registers a converter for it.
    """


def converter(*module_classes: type) -> Callable[[F], F]:
    """Register the decorated function as the ONNX converter of ``module_classes``.

    >>> @converter(MyScale)
    ... def _scale(g, module, x, path):
    ...     return x.derive(g.node("Mul", [x.name, g.scalar(module.factor)], hint=path))
    """
    if not module_classes:
        msg = "converter() needs at least one module class"
        raise TypeError(msg)

    def register(fn: F) -> F:
        for cls in module_classes:
            _CONVERTERS[cls] = fn
        return fn

    return register


def supported_layers() -> list[str]:
    """The names of the classes with a converter, sorted."""
    _load_builtin()
    return sorted({cls.__name__ for cls in _CONVERTERS})


def find_converter(module: Any) -> Converter | None:
    """The converter of ``type(module)`` through its MRO, or None (also None when a subclass
    overrides the computation of the class the converter is registered for)."""
    _load_builtin()
    mro = type(module).__mro__
    for i, cls in enumerate(mro):
        fn = _CONVERTERS.get(cls)
        if fn is None:
            continue
        for sub in mro[:i]:
            if "forward_pass" in sub.__dict__ or "infer" in sub.__dict__:
                return None
        return fn
    return None


def convert(g: GraphBuilder, module: Any, x: Value, path: str) -> Value:
    """Convert ``module`` (at ``path`` in the model) applied to ``x``; return its output value
    with the example output attached and every static axis of its shape filled in.

    Raises
    ------
    UnsupportedLayerError
        When no converter is registered for the module's class.
    """
    fn = find_converter(module)
    if fn is None:
        where = f"at {path!r}" if path else "(the model itself)"
        msg = (f"ONNX export: no converter for the layer {type(module).__name__} {where} "
               f"({module!r}). Supported layers: {', '.join(supported_layers())}. A layer of "
               "your own can be exported by registering a converter for its class with "
               "@nnbackend.onnx.converter(ItsClass).")
        raise UnsupportedLayerError(msg)
    y = fn(g, module, x, path)
    if not isinstance(y, Value):
        msg = (f"ONNX export: the converter of {type(module).__name__} at {path!r} returned "
               f"{type(y).__name__}, not a Value")
        raise TypeError(msg)
    if _has_example(y):
        return y
    out = _run_in_eval_mode(module, backend_input(x))
    return attach(y, out, x, g.elem_type, path=path, layer=type(module).__name__)


def _run_in_eval_mode(module: Any, x: Any) -> Any:
    """``module(x)`` in eval mode (export sets it for the whole model; a direct call of
    :func:`convert` may not have), every module's mode restored."""
    modes = [(m, m.training) for m in module.modules() if m.training]
    if not modes:
        return module(x)
    module.eval()
    try:
        return module(x)
    finally:
        for m, training in modes:
            object.__setattr__(m, "training", training)


def backend_input(v: Value) -> Any:
    """The example a Value holds on the backend, nested as its parts: what the module takes
    (an array, or a tuple such as a recurrent layer's ``(x, (h0, c0))``)."""
    if v.is_tuple:
        return tuple(backend_input(p) for p in v.parts)
    return v.array


def _has_example(v: Value) -> bool:
    if v.is_tuple:
        return all(_has_example(p) for p in v.parts)
    return v.example is not None and v.array is not None


def attach(v: Value, out: Any, x: Value | None, float_type: int, *, path: str = "",
           layer: str = "") -> Value:
    """``v`` with the example output ``out`` (an array on the backend, or a tuple of them)
    attached, its ``None`` axes filled from it and its static axes checked against it.

    A shape of None altogether takes :func:`inherit_dims` from the input ``x``; an element
    type of 0 that of the example (floating: ``float_type``, the export's).
    """
    from nnbackend.backend import to_numpy

    where = f"{layer} at {path!r}" if layer else repr(path)
    if isinstance(out, tuple):
        if len(v.parts) != len(out):
            msg = (f"ONNX export: the converter of {where} returned {len(v.parts)} outputs, "
                   f"the layer {len(out)}")
            raise ValueError(msg)
        return Value.tuple_of(*(attach(p, o, x, float_type, path=path, layer=layer)
                                for p, o in zip(v.parts, out, strict=True)))
    host = to_numpy(out)
    sizes = tuple(int(n) for n in host.shape)
    while x is not None and x.is_tuple:
        x = x.parts[0]
    if v.shape is not None:
        shape = v.shape
    elif x is not None:
        shape = inherit_dims(x, sizes)
    else:
        shape = tuple(None for _ in sizes)
    if len(shape) != len(sizes):
        msg = (f"ONNX export: the converter of {where} gives rank {len(shape)} "
               f"({shape}), the layer's output has shape {sizes}")
        raise ValueError(msg)
    filled: list[Any] = []
    for d, n in zip(shape, sizes, strict=True):
        if isinstance(d, int) and d != n:
            msg = (f"ONNX export: the converter of {where} gives shape {shape}, the layer's "
                   f"output has shape {sizes}")
            raise ValueError(msg)
        filled.append(n if d is None else d)
    elem = v.elem_type or (float_type if host.dtype.kind == "f" else elem_type_of(host.dtype))
    return Value(v.name, elem, tuple(filled), host, out)


def inherit_dims(x: Value, sizes: tuple[int, ...]) -> tuple[Any, ...]:
    """The default shape of an output of ``sizes``: ``x``'s dynamic axes where the axis
    exists in ``x`` with the same example size, static elsewhere (right for batch and
    sequence axes that a layer keeps in place)."""
    if x.example is None or x.shape is None:
        return tuple(None for _ in sizes)
    xs, xn = x.dims(), x.static_shape
    out: list[Any] = []
    for i, n in enumerate(sizes):
        d = xs[i] if i < len(xs) else None
        out.append(d if isinstance(d, str) and xn[i] == n else None)
    return tuple(out)


_LOADED = False


def _load_builtin() -> None:
    """Import the modules that register the built-in converters (once, on first use)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    import importlib

    for name in ("_layers", "_sequence"):
        try:
            importlib.import_module(f"nnbackend.onnx.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"nnbackend.onnx.{name}":
                raise
