"""``Sequential``: a(l) = f_l(a(l−1)), layer after layer, and the chain rule backwards."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .._typing import Array, Backprop
from .linear import InputShapeError
from .module import Context, Module

__all__ = ["Sequential"]


class Sequential(Module):
    """Apply layers in order: a(0) = x, a(l) = layer_l(a(l−1)); the output is a(L).

    Backward runs the layers' closures in reverse (the chain rule):
    δ(l−1) = ∂L/∂a(l−1) = backprop_l(δ(l)).

    Parameters
    ----------
    *layers : Module
    backend : optional
        When given, every parameter is moved there (see :meth:`Module.to`).

    Notes
    -----
    The network's input is data, so ``forward`` does not compute ∂L/∂x unless asked
    (``input_grad=True``): the first layer with parameters skips ∂L/∂x, and parameterless
    layers in front of it without training-time behaviour run by ``infer``.
    """

    def __init__(self, *layers: Module, backend: Any = None) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                msg = f"Sequential: layer {i} must be a Module, got {type(layer).__name__}"
                raise TypeError(msg)
            setattr(self, str(i), layer)
        self.layers: tuple[Module, ...] = tuple(layers)
        self._first_trainable = next(  # index of the first layer with parameters
            (i for i, layer in enumerate(self.layers) if layer._reference_array() is not None),
            len(self.layers),
        )
        # Leading layers run by inference when ∂L/∂x is not wanted: up to the first trainable
        # layer, and never past a layer that behaves differently in training (its inference
        # must not stand in for its training forward in a mode it was not written for).
        self._shortcut = next(
            (i for i, layer in enumerate(self.layers[: self._first_trainable])
             if _has_training_behaviour(layer)),
            self._first_trainable,
        )
        _check_widths(self.layers)
        # What each layer may overwrite (module docstring of nnbackend.layers.module): its
        # input when the layer before hands over its output, its dy when the layer after
        # hands over its ∂L/∂x; at the ends, what the Sequential's own caller allows.
        first, last = (layers[0], layers[-1]) if layers else (None, None)
        ours = type(self).takes_ownership  # (False for a subclass with a forward of its own)
        self.hands_over_output = ours and last is not None and last.hands_over_output
        self.hands_over_input_grad = ours and first is not None and first.hands_over_input_grad
        self._owns: tuple[tuple[bool, bool], ...] = tuple(
            (layer.takes_ownership and i > 0 and layers[i - 1].hands_over_output,
             layer.takes_ownership and i + 1 < len(layers) and layers[i + 1].hands_over_input_grad)
            for i, layer in enumerate(layers))
        self._context_cache: dict[tuple[int, bool], tuple[Context, tuple[Context, ...]]] = {}
        if backend is not None:
            self.to(backend)
        _check_one_placement(self)

    def __getstate__(self) -> dict[str, Any]:
        # The cached contexts hold namespaces (modules), which copy and pickle refuse; they
        # are rebuilt on the next forward.
        state = dict(self.__dict__)
        state["_context_cache"] = {}
        return state

    def config(self) -> dict[str, Any]:
        """``{"layers": [...]}`` (see :mod:`nnbackend.layers.description`)."""
        return {"layers": list(self.layers)}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Sequential:
        """``Sequential(*config["layers"])``: the inverse of :meth:`config`."""
        layers = config.get("layers")
        if set(config) != {"layers"} or not isinstance(layers, list):
            msg = f"Sequential's config is {{'layers': [layer, ...]}}, got keys {sorted(config)}"
            raise TypeError(msg)
        return cls(*layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def __getitem__(self, index: int) -> Module:
        return self.layers[index]

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}): " + repr(layer).replace("\n", "\n  ")  # nested: indented
                        for i, layer in enumerate(self.layers))
        return f"Sequential({inner}\n)" if inner else "Sequential()"

    def _where(self) -> str:
        return "Sequential"

    def forward(self, x: Array, *, input_grad: bool = False) -> tuple[Array, Backprop]:
        """Training forward; ``backprop(dy)`` returns ∂L/∂x only when ``input_grad`` is True."""
        return super().forward(x, input_grad=input_grad)

    def infer(self, x: Array, ctx: Context) -> Array:
        layers, i = self.layers, 0
        contexts = self._contexts(ctx, False)
        try:
            for i in range(len(layers)):
                x = layers[i].infer(x, contexts[i])
        except InputShapeError as err:  # name the layer by its index path in the model
            err.inside(type(self).__name__, i)
            raise
        return x

    takes_ownership = True  # passed on to the first layer (input) and the last (dy)

    def _contexts(self, ctx: Context, training: bool) -> tuple[Context, ...]:
        """Each layer's context in a forward (``training``: ``forward_pass``, else ``infer``)
        under ``ctx``: its namespace; ∂L/∂x wanted as ``ctx`` wants it for the first layer
        that runs a forward pass and always after it (its ∂L/∂x feeds the layer before); what
        the layer may overwrite. Cached per context (contexts are cached for good)."""
        cache = self._context_cache
        key = (id(ctx), training)
        entry = cache.get(key)  # holding ctx, so that its id is not another's while cached
        contexts = None if entry is None else entry[1]
        if contexts is None:
            start = self._shortcut if training and not ctx.input_grad else 0
            last = len(self.layers) - 1
            made = []
            for i, (layer, (owns_input, owns_grad)) in enumerate(zip(self.layers, self._owns,
                                                                      strict=True)):
                owns_input |= i == 0 and ctx.owns_input and layer.takes_ownership
                owns_grad |= i == last and ctx.owns_grad and layer.takes_ownership
                input_grad = ctx.input_grad or (training and i > start)
                made.append(Context.of(ctx.xp, input_grad, owns_input, owns_grad))
            contexts = tuple(made)
            cache[key] = (ctx, contexts)
        return contexts

    def forward_pass(self, x: Array, ctx: Context) -> tuple[Array, Backprop]:
        layers, start, i = self.layers, 0, 0
        backprops = []
        contexts = self._contexts(ctx, True)
        try:
            if not ctx.input_grad:  # leading layers need no backward pass when nothing before
                start = self._shortcut  # them is trained: their outputs only
                for i in range(start):
                    x = layers[i].infer(x, contexts[i])
            for i in range(start, len(layers)):
                x, backprop = layers[i].forward_pass(x, contexts[i])
                backprops.append(backprop)
        except InputShapeError as err:  # name the layer by its index path in the model
            err.inside(type(self).__name__, i)
            raise
        if not backprops and not ctx.input_grad:
            # Every layer ran by inference (none trained, none with training behaviour): no
            # ∂L/∂x was asked for, and dy passed through untouched is not one.
            return x, _no_input_grad

        def backprop_all(dy: Array) -> Array | None:
            # Last layer first, each closure dropped once it has run: what it kept for its
            # backward is freed as the pass goes (as PyTorch's autograd frees saved tensors),
            # so the later layers' gradients reuse that memory rather than the process's
            # growing (a closure runs once; the public boundary refuses a second call).
            while backprops:
                dy = backprops.pop()(dy)
            return dy

        return x, backprop_all


def _no_input_grad(dy: Array) -> None:
    return None


def _has_training_behaviour(layer: Module) -> bool:
    return any(m.has_training_behaviour for m in layer.modules())


def _check_widths(layers: tuple[Module, ...]) -> None:
    """Reject a chain whose Linear widths do not connect, naming both layers by index path.

    Nested Sequentials are looked through (their layers are numbered ``1.0``, ``1.1``, ...);
    other layers without ``in_features``/``out_features`` are taken to keep the width, and an
    ``out_features`` of None (a Parallel concatenation) means the width is not known here.
    """
    width, source = None, None
    for path, layer in _leaves(layers, ""):
        in_features = getattr(layer, "in_features", None)
        if width is not None and in_features is not None and in_features != width:
            msg = (
                f"Sequential: layer {path} {layer!r} expects {in_features} features, but layer "
                f"{source} produces {width}"
            )
            raise ValueError(msg)
        if hasattr(layer, "out_features"):
            width, source = getattr(layer, "out_features", None), f"{path} {layer!r}"


def _leaves(layers: tuple[Module, ...], prefix: str) -> Iterator[tuple[str, Module]]:
    """(index path, layer) for every layer, descending into nested Sequentials."""
    for i, layer in enumerate(layers):
        if isinstance(layer, Sequential):
            yield from _leaves(layer.layers, f"{prefix}{i}.")
        else:
            yield f"{prefix}{i}", layer


def _check_one_placement(model: Module) -> None:
    """All parameters must share one namespace, device and dtype."""
    from ..backend import backend_of, dtype_name

    first: tuple[str, Any, str] | None = None
    for name, p in model.named_parameters():
        be = backend_of(p.data)
        here = (be.name, be.device, dtype_name(p.dtype))
        if first is None:
            first, first_name = here, name
        elif here != first:
            msg = (
                f"Sequential: parameter {name!r} is {here[0]} on {here[1]!r} ({here[2]}) but "
                f"{first_name!r} is {first[0]} on {first[1]!r} ({first[2]}); pass backend=... "
                "or create every layer with the same backend and dtype"
            )
            raise ValueError(msg)
