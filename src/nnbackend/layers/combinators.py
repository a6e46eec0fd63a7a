"""Composition beyond a chain: ``Residual`` (y = x + f(x)) and ``Parallel`` (branches merged).

Both are containers over the layer protocol (:mod:`nnbackend.layers.module`): they call their
children's ``forward_pass``/``infer``/``check_input`` and combine the children's closures.

The fan-out rule
----------------
A value used in several places receives the sum of the gradients of its uses:

- ``Residual(f)``: x feeds the identity path and the block, so ∂L/∂x = dy + f'(x)ᵀ dy.
- ``Parallel(f₁, ..., fₖ)``: x feeds every branch, so ∂L/∂x = Σᵢ fᵢ'(x)ᵀ dyᵢ.
- A module used twice (the same ``Linear`` instance at two places of a ``Sequential``, or as
  two branches) runs ``forward_pass`` twice; each call makes its own closure, and each closure
  adds its contribution to the parameters' ``grad`` (:meth:`Parameter.accumulate_grad` adds),
  so tied weights receive the sum. Two layers sharing one :class:`Parameter` object likewise,
  and an activation used twice keeps one retained output per use.

State-dict names
----------------
The names PyTorch gives the same structure::

    Residual(Sequential(Linear(4, 8), Tanh(), Linear(8, 4)))
        block.0.weight, block.0.bias, block.2.weight, block.2.bias
        (a torch module that assigns ``self.block = nn.Sequential(...)``)
    Parallel(Linear(4, 3), Sequential(Tanh(), Linear(4, 2)), merge="concat")
        0.weight, 0.bias, 1.1.weight, 1.1.bias   (``torch.nn.ModuleList``'s names)

Example
-------
A residual MLP block and a two-branch layer joining NCHW channels::

    block = nb.Residual(nb.Sequential(nb.Linear(16, 32), nb.ReLU(), nb.Linear(32, 16)))
    model = nb.Sequential(nb.Linear(4, 16), nb.Tanh(), block, nb.Linear(16, 3))
    inception = nb.Parallel(branch_a, branch_b, merge="concat", axis=1)  # (N, Ca+Cb, H, W)
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final, Literal, TypeAlias

from .._typing import Array, Backprop
from ..backend import backend_of, dtype_name
from .linear import InputShapeError
from .module import Context, Module
from .sequential import Sequential

__all__ = ["Parallel", "Residual"]

MERGES: Final = ("add", "concat")
"""The merges :class:`Parallel` knows: Σᵢ fᵢ(x), or the concatenation along ``axis``."""

_KEEP: Final = "keep"
# The width (last axis) a module produces as its construction tells: a number, the width of
# its input (activations, residual blocks), or None when it cannot be told before the input.
_Width: TypeAlias = int | Literal["keep"] | None


class Residual(Module):
    """y = x + f(x): a block with a skip connection (He et al., 2016).

    Backward, by the fan-out rule (x feeds both terms): ∂L/∂x = dy + f'(x)ᵀ dy; the block's
    parameters receive their gradients from dy as they would without the skip.

    Parameters
    ----------
    block : Module
        f, mapping x of shape S to an output of the same shape S (no broadcasting).

    Notes
    -----
    The block is asked for ∂L/∂x exactly when the caller asks the Residual for it
    (``ctx.input_grad``): the sum dy + f'(dy) is the only use of the block's input gradient.
    Its parameters are named ``block.<name>`` (``block.0.weight`` for a Sequential block).
    """

    in_features: int
    out_features: int
    hands_over_output = True  # x + f(x) is new (in f(x)'s storage when the block hands it over)
    hands_over_input_grad = True

    def __init__(self, block: Module) -> None:
        super().__init__()
        if not isinstance(block, Module):
            msg = f"Residual: block must be a Module, got {type(block).__name__}"
            raise TypeError(msg)
        self.block = block
        width_in, width_out = _widths(block)
        if width_in is not None and isinstance(width_out, int) and width_in != width_out:
            msg = (f"Residual: the block {_short(block)} maps {width_in} features to "
                   f"{width_out}; y = x + f(x) needs them equal")
            raise ValueError(msg)
        known = width_in if width_in is not None else width_out
        if isinstance(known, int):  # for Sequential's width check; absent: it keeps the width
            self.in_features = self.out_features = known
        _check_one_placement(self, "Residual")

    def config(self) -> dict[str, Any]:
        """``{"block": block}`` (see :mod:`nnbackend.layers.description`)."""
        return {"block": self.block}

    def __repr__(self) -> str:
        return _container_repr(self, self.named_children())

    def _where(self) -> str:
        return "Residual"

    def check_input(self, x: Any, ctx: Context) -> None:
        _refuse_tuple(x)
        with _NamedPath(self, "block"):
            self.block.check_input(x, ctx)

    def infer(self, x: Array, ctx: Context) -> Array:
        _refuse_tuple(x)
        with _NamedPath(self, "block"):
            fx = self.block.infer(x, ctx)
        _check_same_shape(x, fx)
        return _added(fx, x, self.block.hands_over_output)

    def forward_pass(self, x: Array, ctx: Context) -> tuple[Array, Backprop]:
        _refuse_tuple(x)
        with _NamedPath(self, "block"):
            # ctx as it is: ∂L/∂x, and so the block's, is wanted only when the caller wants it.
            fx, block_backprop = self.block.forward_pass(x, ctx)
        _check_same_shape(x, fx)
        y = _added(fx, x, self.block.hands_over_output)

        if not ctx.input_grad:
            def backprop_params(dy: Array) -> None:
                block_backprop(dy)  # the block's parameters still take their gradients

            return y, backprop_params

        fresh = self.block.hands_over_input_grad

        def backprop(dy: Array) -> Array:
            return _added(block_backprop(dy), dy, fresh)  # never into dy: it is the caller's

        return y, backprop


def _added(owned: Array, other: Array, in_place: bool) -> Array:
    """owned + other, written into ``owned`` when ``in_place`` (a new array nothing else holds;
    rebound where arrays are immutable, as JAX's)."""
    if not in_place:
        return owned + other
    owned += other
    return owned


class Parallel(Module):
    """Branches on one input, merged: y = Σᵢ fᵢ(x) (``"add"``) or concat(f₁(x), ..., axis).

    Backward, by the fan-out rule (x feeds every branch): ∂L/∂x = Σᵢ backpropᵢ(dyᵢ), where
    dyᵢ = dy for ``"add"`` and, for ``"concat"``, the slice of dy that branch i produced
    (by the branches' output sizes along ``axis``; basic slicing, views where the library has
    them).

    Parameters
    ----------
    *branches : Module
        f₁, ..., fₖ (k >= 1), each applied to the same input x (an array, or a tuple for
        layers that take several; the tuple's gradients are summed entry by entry, None
        standing for an input without one).
    merge : {"add", "concat"}
        ``"add"``: the outputs must have one shape. ``"concat"``: they must agree on every axis
        but ``axis``.
    axis : int
        The axis of the concatenation (``"concat"`` only): -1 joins features; 1 joins the
        channels of NCHW (or NCL) outputs.

    Notes
    -----
    Branch i's parameters are named ``<i>.<name>`` (``0.weight``, ``1.0.weight``), as
    ``torch.nn.ModuleList`` names them. Every branch is asked for ∂L/∂x exactly when the caller
    asks the Parallel for it.
    """

    in_features: int
    out_features: int | None

    def __init__(self, *branches: Module, merge: str = "add", axis: int = -1) -> None:
        super().__init__()
        if not branches:
            msg = "Parallel: needs at least one branch"
            raise ValueError(msg)
        for i, branch in enumerate(branches):
            if not isinstance(branch, Module):
                msg = f"Parallel: branch {i} must be a Module, got {type(branch).__name__}"
                raise TypeError(msg)
            setattr(self, str(i), branch)
        self.branches: tuple[Module, ...] = tuple(branches)
        if merge not in MERGES:
            msg = f"Parallel: merge must be one of {MERGES}, got {merge!r}"
            raise ValueError(msg)
        self.merge: str = merge
        self.axis: int = _check_axis(axis, merge)
        self._set_widths()
        _check_one_placement(self, "Parallel")

    def __len__(self) -> int:
        return len(self.branches)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.branches)

    def __getitem__(self, index: int) -> Module:
        return self.branches[index]

    def config(self) -> dict[str, Any]:
        """``{"branches": [...], "merge": ..., "axis": ...}`` (see
        :mod:`nnbackend.layers.description`)."""
        return {"branches": list(self.branches), "merge": self.merge, "axis": self.axis}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Parallel:
        """``Parallel(*config["branches"], merge=..., axis=...)``: the inverse of :meth:`config`."""
        branches = config.get("branches")
        if not set(config) <= {"branches", "merge", "axis"} or not isinstance(branches, list):
            msg = ("Parallel's config is {'branches': [layer, ...], 'merge': ..., 'axis': ...}, "
                   f"got keys {sorted(config)}")
            raise TypeError(msg)
        return cls(*branches, merge=config.get("merge", "add"), axis=config.get("axis", -1))

    def extra_repr(self) -> str:
        return f"merge={self.merge!r}" + (f", axis={self.axis}" if self.merge == "concat" else "")

    def __repr__(self) -> str:
        return _container_repr(self, self.named_children())

    def _where(self) -> str:
        return f"Parallel(merge={self.merge!r})"

    def check_input(self, x: Any, ctx: Context) -> None:
        for i, branch in enumerate(self.branches):
            with _NamedPath(self, i):
                branch.check_input(x, ctx)

    def infer(self, x: Any, ctx: Context) -> Array:
        outs = []
        for i, branch in enumerate(self.branches):
            with _NamedPath(self, i):
                outs.append(branch.infer(x, ctx))
        return self._merged(outs, ctx)

    def forward_pass(self, x: Any, ctx: Context) -> tuple[Array, Backprop]:
        outs, backprops = [], []
        for i, branch in enumerate(self.branches):
            with _NamedPath(self, i):  # ctx as it is: see the class notes
                out, backprop = branch.forward_pass(x, ctx)
            outs.append(out)
            backprops.append(backprop)
        y = self._merged(outs, ctx)
        input_grad = ctx.input_grad
        if self.merge == "add":
            def backprop_add(dy: Array) -> Any:
                return _fan_in([(b, dy) for b in backprops], input_grad)

            return y, backprop_add
        index = _concat_slices(outs, _normalised_axis(self.axis, outs[0]))

        def backprop_concat(dy: Array) -> Any:
            return _fan_in([(b, dy[ix]) for b, ix in zip(backprops, index, strict=True)],
                           input_grad)

        return y, backprop_concat

    def _merged(self, outs: list[Any], ctx: Context) -> Array:
        """Σᵢ outᵢ or their concatenation, after checking the shapes agree."""
        first = outs[0]
        for i, out in enumerate(outs):
            if isinstance(out, tuple):
                msg = (f"{self._where()}: branch {i} returned a tuple of {len(out)} arrays; "
                       "a merge takes one array per branch")
                raise TypeError(msg)
        if self.merge == "add":
            for i, out in enumerate(outs[1:], 1):
                if out.shape != first.shape:
                    msg = (f"Parallel(merge='add'): branch {i} gives shape {tuple(out.shape)} "
                           f"but branch 0 gives {tuple(first.shape)}; 'add' needs equal shapes")
                    raise ValueError(msg)
            return _sum(outs)
        axis = _normalised_axis(self.axis, first)
        for i, out in enumerate(outs[1:], 1):
            if out.ndim != first.ndim or any(
                a != b for k, (a, b) in enumerate(zip(out.shape, first.shape, strict=True))
                if k != axis
            ):
                msg = (f"Parallel(merge='concat', axis={self.axis}): branch {i} gives shape "
                       f"{tuple(out.shape)} but branch 0 gives {tuple(first.shape)}; they must "
                       f"agree on every axis but {self.axis}")
                raise ValueError(msg)
        return ctx.xp.concat(outs, axis=axis)

    def _set_widths(self) -> None:
        """``in_features``/``out_features`` where the construction tells them (for Sequential's
        width check), refusing branches that can never agree."""
        ins = [(i, w) for i, (w, _) in enumerate(map(_widths, self.branches)) if w is not None]
        for i, width in ins[1:]:
            if width != ins[0][1]:
                msg = (f"Parallel: branch {i} expects {width} input features but branch "
                       f"{ins[0][0]} expects {ins[0][1]}; every branch takes the same x")
                raise ValueError(msg)
        width_in = ins[0][1] if ins else None
        outs: list[_Width] = [
            width_in if out == _KEEP and width_in is not None else out
            for _, out in map(_widths, self.branches)
        ]
        width_out = _merged_width(outs, self.merge, self.axis)
        if width_in is not None:
            self.in_features = width_in
        if width_out != _KEEP:
            self.out_features = width_out  # None: unknown until the input's rank is seen


# ------------------------------------------------------------------------- helpers


def _check_axis(axis: Any, merge: str) -> int:
    try:
        if isinstance(axis, bool):  # an int to operator.index, never an axis
            raise TypeError
        number = operator.index(axis)
    except TypeError:
        msg = f"Parallel: axis must be an integer, got {axis!r}"
        raise TypeError(msg) from None
    if merge == "add" and number != -1:
        msg = (f"Parallel: axis={number} applies to merge='concat' only; merge='add' sums "
               "whole outputs")
        raise ValueError(msg)
    return number


def _normalised_axis(axis: int, out: Array) -> int:
    ndim = int(out.ndim)
    if not -ndim <= axis < ndim:
        msg = (f"Parallel(merge='concat'): axis {axis} is out of range for branch outputs of "
               f"shape {tuple(out.shape)}")
        raise ValueError(msg)
    return axis % ndim


def _concat_slices(outs: list[Array], axis: int) -> list[tuple[Any, ...]]:
    """The index of each branch's part of the concatenation: (:, ..., start:stop, ...)."""
    lead = (slice(None),) * axis
    index, start = [], 0
    for out in outs:
        stop = start + int(out.shape[axis])
        index.append((*lead, slice(start, stop), ...))
        start = stop
    return index


def _sum(values: list[Array]) -> Array:
    """Σ values; the first sum is a new array, so the rest add into it in place."""
    total = values[0]
    for k, value in enumerate(values[1:]):
        if k == 0:
            total = total + value
        else:
            total += value  # rebinds where arrays are immutable (JAX)
    return total


def _fan_in(calls: list[tuple[Backprop, Array]], input_grad: bool) -> Any:
    """Run each branch's closure on its part of dy and sum the input gradients (the fan-out
    rule); a running sum keeps one gradient alive at a time. None when ∂L/∂x is not wanted."""
    total: Any = None
    owned = False  # whether total is a sum made here (then it may be added into in place)
    for backprop, dy in calls:
        grad = backprop(dy)
        if not input_grad:
            continue
        if total is None:
            total = grad
        else:
            total, owned = _add(total, grad, owned), True
    return total if input_grad else None


def _add(total: Any, grad: Any, owned: bool) -> Any:
    """total + grad, in place only into a sum made here (a closure's own array may be dy
    itself, as Identity's is); entry by entry for tuples, None standing for no gradient."""
    if isinstance(total, tuple):
        return tuple(b if a is None else a if b is None else a + b
                     for a, b in zip(total, grad, strict=True))
    if owned:
        total += grad  # rebinds where arrays are immutable (JAX)
        return total
    return total + grad


def _refuse_tuple(x: Any) -> None:
    if isinstance(x, tuple):
        msg = (f"Residual: takes one array (y = x + f(x)), got a tuple of {len(x)} inputs; "
               "wrap the block in a layer that returns one array")
        raise TypeError(msg)


def _check_same_shape(x: Array, fx: Any) -> None:
    if isinstance(fx, tuple) or fx.shape != x.shape:
        got = f"a tuple of {len(fx)}" if isinstance(fx, tuple) else f"shape {tuple(fx.shape)}"
        msg = (f"Residual: the block's output f(x) has {got} but x has shape "
               f"{tuple(x.shape)}; y = x + f(x) needs equal shapes (no broadcasting)")
        raise ValueError(msg)


class _NamedPath:
    """Prepend a child's name to an :class:`InputShapeError`'s layer path passing through."""

    __slots__ = ("container", "name")

    def __init__(self, container: Module, name: int | str) -> None:
        self.container, self.name = type(container).__name__, name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, err: Any, tb: Any) -> Literal[False]:
        if isinstance(err, InputShapeError):
            err.inside(self.container, self.name)
        return False


def _widths(module: Module) -> tuple[int | None, _Width]:
    """(input width, output width) of the last axis, as far as the construction tells.

    The input width is a number or None (any); the output a number, ``"keep"`` (the input's)
    or None (unknown). Sequentials are walked; other modules give ``in_features`` and
    ``out_features`` (absent: they keep the width; an ``out_features`` of None: unknown).
    """
    if isinstance(module, Sequential):
        width_in: int | None = None
        width: _Width = _KEEP
        for layer in module.layers:
            layer_in, layer_out = _widths(layer)
            if width == _KEEP and width_in is None:
                width_in = layer_in
            if layer_out != _KEEP:
                width = layer_out
        return width_in, width
    return getattr(module, "in_features", None), getattr(module, "out_features", _KEEP)


def _merged_width(outs: list[_Width], merge: str, axis: int) -> _Width:
    """The width of the merged output from the branches' (KEEP only when the input's is
    unknown); raises for ``"add"`` branches of different widths."""
    known = [(i, w) for i, w in enumerate(outs) if isinstance(w, int)]
    if merge == "add":
        for i, width in known[1:]:
            if width != known[0][1]:
                msg = (f"Parallel(merge='add'): branch {i} gives {width} features but branch "
                       f"{known[0][0]} gives {known[0][1]}; 'add' needs equal widths")
                raise ValueError(msg)
        if known:
            return known[0][1]
        return _KEEP if all(w == _KEEP for w in outs) else None
    if axis == -1 and len(known) == len(outs):
        return sum(w for _, w in known)
    return None  # another axis: whether it is the last one depends on the input's rank


def _short(module: Module) -> str:
    return type(module).__name__ if isinstance(module, Sequential) else repr(module)


def _container_repr(module: Module, children: Iterable[tuple[str, Module]]) -> str:
    """``Name(\\n  extra\\n  (name): child\\n)``, nested containers indented (PyTorch's)."""
    lines = [module.extra_repr()] if module.extra_repr() else []
    lines += [f"({name}): {repr(child).replace(chr(10), chr(10) + '  ')}"
              for name, child in children]
    return f"{type(module).__name__}(" + "".join(f"\n  {line}" for line in lines) + "\n)"


def _check_one_placement(model: Module, where: str) -> None:
    """All parameters must share one namespace, device and dtype."""
    first: tuple[str, tuple[str, Any, str]] | None = None
    for name, p in model.named_parameters():
        be = backend_of(p.data)
        here = (be.name, be.device, dtype_name(p.dtype))
        if first is None:
            first = (name, here)
        elif here != first[1]:
            msg = (f"{where}: parameter {name!r} is {here[0]} on {here[1]!r} ({here[2]}) but "
                   f"{first[0]!r} is {first[1][0]} on {first[1][1]!r} ({first[1][2]}); create "
                   "every layer with the same backend and dtype, or move the model with .to()")
            raise ValueError(msg)
