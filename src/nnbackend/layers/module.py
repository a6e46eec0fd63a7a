"""``Parameter``, ``Context`` and the ``Module`` base class: the layer protocol and model state.

The layer protocol
------------------
A layer is a :class:`Module` that implements one method, and may implement two more::

    class Scale(nb.Module):                     # y = x ⊙ w, w broadcast over the rows
        def __init__(self, n):
            super().__init__()
            self.weight = nb.Parameter(nb.get_backend().zeros((n,)) + 1.0)

        def forward_pass(self, x, ctx):         # required: the training forward
            w = self.weight.data
            def backprop(dy):                   # ∂L/∂y → ∂L/∂x, accumulating ∂L/∂w
                self.weight.accumulate_grad(ctx.xp.sum(dy * x, axis=0))
                return dy * w if ctx.input_grad else None
            return x * w, backprop

        def infer(self, x, ctx):                # optional: y without keeping anything
            return x * self.weight.data

        def check_input(self, x, ctx):          # optional: raise for an input it cannot take
            if x.shape[-1] != self.weight.shape[0]: raise ValueError(...)

``ctx`` is a :class:`Context`: the input's namespace ``ctx.xp`` and ``ctx.input_grad``, whether
∂L/∂x is wanted (the first layer of a network is not asked for it). What ``backprop`` needs
stays in the closure (Thinc's design); a closure may be called once. A layer whose input is a
tuple (attention's queries, keys, values and mask) returns a tuple from ``backprop``, with None
for an input that has no gradient (the mask).

Users call the public methods, which validate at the boundary and then run the protocol::

    y, backprop = module.forward(x)   # training forward: forward_pass behind a check
    dx = backprop(dy)                 # ∂L/∂x; every Parameter.grad accumulated
    y = module(x)                     # inference: infer, nothing retained

Containers call their children's ``forward_pass``/``infer`` directly with arrays the library
made, so only the outermost call pays for the checks.

Writing in place, where it is safe
----------------------------------
A layer overwrites its input, or the dy its ``backprop`` receives, only when its context says
it owns them (``ctx.owns_input``, ``ctx.owns_grad``). A :class:`~nnbackend.layers.Sequential`
says so from its layers' declarations: a layer's input is owned when the layer before it
``hands_over_output`` (returns a new array it keeps nothing of), its dy when the layer after
it ``hands_over_input_grad``, and only a layer that ``takes_ownership`` is told. In
``Sequential(Linear, BatchNorm1d, ReLU, Linear)`` the batch norm centres the first Linear's
output in its own storage, the ReLU clips the batch norm's output there, and the ReLU's
backward masks the second Linear's ∂L/∂x in place: three arrays the size of the batch's
activations fewer per step (PyTorch's ``ReLU(inplace=True)``, decided by the library where it
cannot go wrong). The outermost call owns nothing: the caller's x and dy are never written.
The declarations describe the forward and backward a class wrote: a subclass that defines
its own (``forward_pass``, ``infer``, ``backward``) declares nothing unless it says so.

The boundary takes floating arrays in the parameters' dtype, unless the module takes integers:
a layer of token ids declares ``input_kind = "integer"`` (``Embedding``), and a module that
declares nothing takes what its first sub-module takes, so a ``Sequential`` or a language
model whose first sub-module is an ``Embedding`` takes integer ids (any integer dtype, on the
model's device) and refuses floats naming the Embedding.

Train and eval modes
--------------------
``module.training`` (``train()``/``eval()``) decides what layers with training-time behaviour
do (dropout's mask, batch normalisation's statistics) in ``forward`` and in ``module(x)`` alike:
``module(x)`` only means "retain nothing for a backward pass". Such layers set the class
attribute ``has_training_behaviour = True``.

Three kinds of state
--------------------
- **Parameters** (:class:`Parameter`, trained): assigned as attributes.
- **Buffers** (saved and moved, not trained, e.g. running statistics):
  :meth:`Module.register_buffer`; a buffer is updated by assigning the attribute again (in
  place where arrays are mutable, rebinding where they are not, as JAX's).
- **Extra state** (host values that are neither: counters of a random stream): a module
  returns it from :meth:`Module.get_extra_state` as a JSON-able dict and takes it back in
  :meth:`Module.set_extra_state`. It is not in ``state_dict()`` (which holds arrays only, under
  PyTorch's names, so a ``torch.nn`` state dict converted to NumPy loads as it is); it travels in
  :meth:`Module.extra_state_dict` and in checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from .._checks import (
    check_array,
    check_floating,
    describe_placement,
    matching_namespace,
    name_mismatch,
    namespace_of,
    same_device,
)
from .._typing import Array, Backprop, Namespace
from ..backend import Backend, backend_of, dtype_name, get_backend, supports_views, to_numpy

if TYPE_CHECKING:
    from .arena import Arena, Slot

__all__ = ["Context", "LoadResult", "Module", "Parameter"]

# Integer buffers (BatchNorm's num_batches_tracked) take integers of any width from a state
# dict, cast to the buffer's own: PyTorch saves int64, JAX without 64-bit types holds int32.
_INTEGER_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


class Parameter:
    """A trainable array and its accumulated gradient.

    Attributes
    ----------
    data : array
        The value; owned by the library (optimizers update it in place where the backend allows,
        and the arena packing it rebinds it to a view of its flat buffer).
    grad : array or None
        ∂L/∂data accumulated by backward passes since the last ``zero_grad``; same shape, dtype
        and device as ``data``.
    name : str
        The name within its module (``"weight"``, ``"bias"``).
    requires_grad : bool
        False freezes the parameter: backward passes accumulate no gradient into it and no
        optimizer moves it (PyTorch's ``requires_grad_(False)``).
    grad_buffer : array or None
        Where the first gradient after ``zero_grad`` is written (a view of its arena's flat
        gradient buffer), or None to take the gradient array as it comes. Rebinding ``data``
        to another array clears it.
    slot : Slot or None
        Where the parameter lives in an :class:`~nnbackend.layers.arena.Arena` (its range of
        the flat buffers; ``data`` is the slot's view while it is packed), or None. A
        parameter whose ``data`` is rebound leaves its arena when the arena next looks.
    """

    __slots__ = ("_data", "grad", "grad_buffer", "name", "requires_grad", "slot")

    def __init__(self, data: Array, name: str = "", *, requires_grad: bool = True) -> None:
        self._data = data
        self.grad: Array | None = None
        self.grad_buffer: Array | None = None
        self.name = name
        self.requires_grad = requires_grad
        self.slot: Slot | None = None

    @property
    def data(self) -> Array:
        """The parameter's value."""
        return self._data

    @data.setter
    def data(self, value: Array) -> None:
        if value is not self._data:
            self.grad_buffer = None  # it matched the old array's shape, dtype and device
            self._data = value

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of ``data``."""
        return tuple(self._data.shape)

    @property
    def dtype(self) -> Any:
        """dtype of ``data``."""
        return self._data.dtype

    def accumulate_grad(self, grad: Array) -> None:
        """grad ← grad + g (the first contribution after ``zero_grad`` is taken as is).

        With a ``grad_buffer``, the first contribution is copied into it, so that gradients
        live in the arena's flat buffer; ``grad`` is never kept by reference then. A frozen
        parameter (``requires_grad=False``) takes nothing.
        """
        if not self.requires_grad:
            return
        buffer = self.grad_buffer
        if self.grad is not None:
            self.grad += grad
        elif buffer is not None and grad.shape == buffer.shape and grad.dtype == buffer.dtype:
            if grad is not buffer:  # a layer may have written it there already
                buffer[...] = grad
            self.grad = buffer
        else:  # kept as is: a wrong shape or dtype is reported by the optimizer, not cast
            self.grad = grad

    def __repr__(self) -> str:
        frozen = "" if self.requires_grad else ", requires_grad=False"
        return (
            f"Parameter({self.name!r}, shape={self.shape}, dtype={dtype_name(self.dtype)}, "
            f"{describe_placement(self.data)}{frozen})"
        )


class Context:
    """What a layer's :meth:`Module.forward_pass` and :meth:`Module.infer` receive.

    Attributes
    ----------
    xp : namespace
        The Array API namespace of the input: every array the layer creates comes from it.
    input_grad : bool
        Whether the caller needs ∂L/∂x: when False, ``backprop`` may skip that work and return
        None (the gradients of the parameters are still accumulated).
    owns_input : bool
        Whether the layer may overwrite its input x (a new array that nothing else holds: the
        output of the layer before it, which declared :attr:`Module.hands_over_output`).
    owns_grad : bool
        Whether ``backprop`` may overwrite the dy it receives (likewise, the ∂L/∂x of the
        layer after it, which declared :attr:`Module.hands_over_input_grad`).

    Only a layer that declares :attr:`Module.takes_ownership` is ever given ``owns_input`` or
    ``owns_grad``; a container passes them on to its own layers only as :class:`Sequential
    <nnbackend.layers.Sequential>` does, from the neighbours' declarations.

    Contexts are immutable and cached (two per namespace and ownership):
    ``Context.of(xp, input_grad)``.
    """

    __slots__ = ("input_grad", "owns_grad", "owns_input", "wanting_input_grad", "xp")
    _cache: ClassVar[dict[tuple[int, ...], Context]] = {}

    def __init__(self, xp: Namespace, input_grad: bool, owns_input: bool = False,
                 owns_grad: bool = False) -> None:
        self.xp = xp
        self.input_grad = input_grad
        self.owns_input = owns_input
        self.owns_grad = owns_grad
        self.wanting_input_grad: Context = self
        """The same context with ``input_grad`` True (what a container gives the layers after
        its first: their ∂L/∂x feeds the layer before)."""

    @classmethod
    def of(cls, xp: Namespace, input_grad: bool, owns_input: bool = False,
           owns_grad: bool = False) -> Context:
        """The context for namespace ``xp``, ``input_grad`` and the ownership flags (one
        dictionary lookup; the cached context holds ``xp``, so its id cannot be reused by
        another namespace). Without ownership the key is ``(id(xp), input_grad)``, which the
        public calls read inline."""
        owning = (owns_input, owns_grad) if owns_input or owns_grad else ()
        ctx = cls._cache.get((id(xp), input_grad, *owning))
        if ctx is None:
            wanting = cls(xp, True, owns_input, owns_grad)
            skipping = cls(xp, False, owns_input, owns_grad)
            skipping.wanting_input_grad = wanting
            wanting_key, skipping_key = (id(xp), True, *owning), (id(xp), False, *owning)
            cls._cache[wanting_key], cls._cache[skipping_key] = wanting, skipping
            ctx = wanting if input_grad else skipping
        return ctx

    def with_input_grad(self, input_grad: bool) -> Context:
        """The same context asking (or not) for ∂L/∂x."""
        if input_grad == self.input_grad:
            return self
        return Context.of(self.xp, input_grad, self.owns_input, self.owns_grad)

    def __repr__(self) -> str:
        name = getattr(self.xp, "__name__", type(self.xp).__name__)
        owning = "".join(f", {flag}=True" for flag in ("owns_input", "owns_grad")
                         if getattr(self, flag))
        return f"Context(xp={name}, input_grad={self.input_grad}{owning})"


_CONTEXTS = Context._cache  # read inline at the public boundary (a call less per forward)


class LoadResult(NamedTuple):
    """What :meth:`Module.load_state_dict` did not match (empty lists when strict)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of layers and containers (see the module docstring for the protocol).

    Parameters, buffers and sub-modules assigned as attributes are registered in assignment
    order, so :meth:`named_parameters` yields stable names such as ``"0.weight"``.
    """

    training: bool
    has_training_behaviour: ClassVar[bool] = False
    """True for layers that behave differently in training mode (dropout, batch norm)."""
    input_kind: ClassVar[str | None] = None
    """What the public boundary (``forward``, ``module(x)``) accepts: ``"floating"`` (arrays in
    the parameters' dtype), ``"integer"`` (token ids of any integer dtype: ``Embedding``), or
    None, the default: what the first registered sub-module takes (so a ``Sequential`` or a
    language model whose first sub-module is an ``Embedding`` takes integer ids), floating for
    a module without sub-modules."""
    hands_over_output: bool = False
    """True for a layer whose ``forward_pass`` and ``infer`` always return a new array that the
    layer keeps no reference to (not its input, a view of it, a buffer it reuses or what its
    backward needs): the layer after it may overwrite it. Subclasses set it as a class
    attribute; containers compute theirs."""
    hands_over_input_grad: bool = False
    """True for a layer whose ``backprop`` returns a new array it keeps no reference to, or
    the dy it was allowed to overwrite (``ctx.owns_grad``): the layer before may overwrite it."""
    takes_ownership: bool = False
    """True for a layer that reads ``ctx.owns_input`` / ``ctx.owns_grad`` and writes in place
    where they allow it (the ReLU, batch normalisation); only such layers are given them."""
    _computing: ClassVar[tuple[str, ...]] = ("forward_pass", "infer", "backward")
    """The methods (and attributes) that make a class's forward and backward: a subclass that
    defines any of them anew does not inherit the three declarations above."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The declarations describe the forward and backward a class wrote: a subclass that
        # writes its own (a Linear that keeps its output, say) starts from the safe default
        # unless it declares them itself.
        if any(name in cls.__dict__ for name in cls._computing):
            for flag in ("hands_over_output", "hands_over_input_grad", "takes_ownership"):
                if flag not in cls.__dict__:
                    setattr(cls, flag, False)

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        buffers: dict[str, Array | None] = self.__dict__.get("_buffers", {})
        if name in buffers:  # store a buffer back: the new value replaces the old
            buffers[name] = value
            object.__setattr__(self, name, value)
            return
        params: dict[str, Parameter] = self.__dict__.get("_parameters", {})
        modules: dict[str, Module] = self.__dict__.get("_modules", {})
        params.pop(name, None)
        modules.pop(name, None)
        if isinstance(value, Parameter):
            value.name = value.name or name
            params[name] = value
        elif isinstance(value, Module):
            modules[name] = value
        object.__setattr__(self, name, value)

    # ---------------------------------------------------------------- the protocol

    def forward_pass(self, x: Any, ctx: Context) -> tuple[Any, Backprop]:
        """The training forward of a layer: return ``(y, backprop)``, ``backprop(dy) -> dx``.

        Implement this in a new layer (see the module docstring). ``x`` has passed the
        boundary checks of the outermost call; ``ctx`` gives the namespace and whether ∂L/∂x is
        wanted.
        """
        msg = f"{type(self).__name__} implements no forward_pass(x, ctx) -> (y, backprop)"
        raise NotImplementedError(msg)

    def infer(self, x: Any, ctx: Context) -> Any:
        """The output of :meth:`forward_pass` without its closure; override to skip what only
        the backward pass needs. Honours ``self.training`` as ``forward_pass`` does."""
        return self.forward_pass(x, ctx.with_input_grad(False))[0]

    def check_input(self, x: Any, ctx: Context) -> None:
        """Raise if this layer cannot take ``x`` (its shape, say); called at the public
        boundary after the namespace, device and dtype checks. Nothing by default."""

    # ---------------------------------------------------------------- the public calls

    def forward(self, x: Any, *, input_grad: bool = True) -> tuple[Any, Backprop]:
        """Training forward: return ``(y, backprop)``; ``backprop(dy)`` returns ∂L/∂x.

        Parameters
        ----------
        x : array (or tuple of arrays, for layers that take several inputs)
            The input, on the module's namespace and device, in its dtype.
        input_grad : bool
            Compute ∂L/∂x in the backward pass; when False, ``backprop`` returns None and skips
            that work (the gradients of the parameters are still accumulated).
        """
        ref = self._reference_array()
        xp = None if ref is None else matching_namespace(x, ref)
        if xp is None:
            xp = self._validate(x)
        ctx = _CONTEXTS.get((id(xp), input_grad)) or Context.of(xp, input_grad)
        self.check_input(x, ctx)
        y, backprop = self.forward_pass(x, ctx)
        return y, _checked_backprop(backprop, y, self)

    def __call__(self, x: Any) -> Any:
        """Inference: y = f(x), retaining nothing for a backward pass (the mode still decides
        what dropout and batch normalisation do, as in PyTorch)."""
        ref = self._reference_array()
        xp = None if ref is None else matching_namespace(x, ref)
        if xp is None:
            xp = self._validate(x)
        ctx = _CONTEXTS.get((id(xp), False)) or Context.of(xp, False)
        self.check_input(x, ctx)
        return self.infer(x, ctx)

    def _validate(self, x: Any) -> Namespace:
        """The namespace of ``x`` once its placement and dtype fit the parameters (the cheap
        identity test valid inputs pass; the full checks only to explain a failure)."""
        if isinstance(x, tuple):
            return self._validate_tuple(x)
        ref = self._reference_array()
        if ref is not None:
            xp = matching_namespace(x, ref)
            if xp is not None:
                return xp
        where = self._where()
        xp = check_array(x, caller=where, what="input")
        ids_layer = self._integer_input_layer()
        if ids_layer is not None:
            _check_integer_input(x, xp, self, ids_layer)
        else:
            check_floating(x, xp, caller=where, what="input")
        if ref is not None:
            _check_matches_parameters(x, xp, ref, where=where, check_dtype=ids_layer is None)
        return xp

    def _integer_input_layer(self) -> Module | None:
        """The module whose ``input_kind`` makes this one take integer ids (itself, or the
        first sub-module along first sub-modules), or None: this module takes floats."""
        module: Module = self
        while True:
            kind = type(module).input_kind
            if kind is not None:
                return module if kind == "integer" else None
            children = module.__dict__["_modules"]
            if not children:
                return None
            module = next(iter(children.values()))

    def _validate_tuple(self, xs: tuple[Any, ...]) -> Namespace:
        """Several inputs (None allowed for an absent one): one namespace and device."""
        where, first, xp = self._where(), None, None
        for i, x in enumerate(xs):
            if x is None:
                continue
            here = check_array(x, caller=where, what=f"input {i}")
            if first is None:
                first, xp = x, here
            elif here is not xp or not same_device(x, first, xp):
                msg = (f"{where}: input {i} is {describe_placement(x)} but input 0 is "
                       f"{describe_placement(first)}")
                raise ValueError(msg)
        if xp is None:
            msg = f"{where}: every input is None"
            raise TypeError(msg)
        ref = self._reference_array()
        if ref is not None:
            _check_matches_parameters(first, xp, ref, where=where, check_dtype=False)
        return xp

    def _reference_array(self) -> Array | None:
        """The first parameter's data (the module's namespace, device and dtype), or None.

        Walks to the first parameter only (every public call asks): no list of them is built.
        """
        for p in self.__dict__["_parameters"].values():
            if p is not None:
                return p.data
        for child in self.__dict__["_modules"].values():
            ref = child._reference_array()
            if ref is not None:
                return ref
        return None

    def _where(self) -> str:
        return repr(self)

    # ---------------------------------------------------------------- the module tree

    def children(self) -> Iterator[Module]:
        """The directly registered sub-modules, in registration order."""
        yield from self.__dict__["_modules"].values()

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """``(name, sub-module)`` for the directly registered sub-modules."""
        yield from self.__dict__["_modules"].items()

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """``(dotted name, module)`` for this module (name ``prefix``) and every descendant,
        each once, depth first in registration order (PyTorch's order)."""
        seen: set[int] = set()
        stack: list[tuple[str, Module]] = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{n}" if name else n, m) for n, m in module.named_children()]
            stack.extend(reversed(children))

    def modules(self) -> Iterator[Module]:
        """This module and every descendant, each once."""
        for _, module in self.named_modules():
            yield module

    def apply(self, fn: Callable[[Module], object]) -> Module:
        """Call ``fn`` on every descendant, then on this module (PyTorch's order); returns self.

        >>> model.apply(lambda m: m.eval() if isinstance(m, nb.Dropout) else None)
        """
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ---------------------------------------------------------------- parameters

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, Parameter)`` for this module and its descendants; a parameter used
        in several places (tied weights) once, under its first name."""
        seen: set[int] = set()
        for name, p in self._named_parameters_all(prefix):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def _named_parameters_all(self, prefix: str) -> Iterator[tuple[str, Parameter]]:
        for name, p in self.__dict__["_parameters"].items():
            if p is not None:
                yield prefix + name, p
        for name, child in self.__dict__["_modules"].items():
            yield from child._named_parameters_all(f"{prefix}{name}.")

    def parameters(self) -> list[Parameter]:
        """All parameters, in :meth:`named_parameters` order."""
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        """Reset every parameter's gradient to None (the next backward assigns it afresh)."""
        for p in self.parameters():
            p.grad = None

    def arena(self) -> Arena:
        """The flat storage of this module's parameters (:mod:`nnbackend.layers.arena`),
        created on the first call: one data and one gradient buffer per namespace, device and
        dtype, that every optimizer, ``clip_grad_norm`` and an all-reduce share. Each call
        also packs what became packable since (parameters unfrozen, or rebound by ``to``)."""
        from .arena import module_arena  # the arena module imports Parameter from here

        return module_arena(self)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Freeze (False) or unfreeze every parameter of this module and its descendants."""
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    # ---------------------------------------------------------------- buffers

    def register_buffer(self, name: str, value: Array | None, *, persistent: bool = True) -> None:
        """Register ``value`` as a buffer: saved (unless ``persistent=False``) and moved with
        the module, never trained. Assigning the attribute again stores a new value."""
        if name in self.__dict__["_parameters"] or name in self.__dict__["_modules"]:
            msg = f"{self._where()}: {name!r} is already a parameter or sub-module"
            raise KeyError(msg)
        self.__dict__["_buffers"][name] = value
        if not persistent:
            self.__dict__["_non_persistent"].add(name)
        object.__setattr__(self, name, value)

    def named_buffers(
        self, prefix: str = "", *, persistent_only: bool = False
    ) -> Iterator[tuple[str, Array]]:
        """``(dotted name, array)`` for the buffers of this module and its descendants."""
        for path, module in self.named_modules():
            skip = module.__dict__["_non_persistent"] if persistent_only else ()
            for name, value in module.__dict__["_buffers"].items():
                if value is not None and name not in skip:
                    yield f"{prefix}{path}.{name}" if path else f"{prefix}{name}", value

    def buffers(self) -> list[Array]:
        """All buffers, in :meth:`named_buffers` order."""
        return [b for _, b in self.named_buffers()]

    # ---------------------------------------------------------------- extra state

    def get_extra_state(self) -> dict[str, Any] | None:
        """Host state that is neither a parameter nor a buffer, as a JSON-able dict (None:
        this module has none). Layers with a random stream return its counters here."""
        return None

    def set_extra_state(self, state: Mapping[str, Any]) -> None:
        """Take back what :meth:`get_extra_state` returned."""
        msg = f"{self._where()} has no extra state to set"
        raise TypeError(msg)

    def extra_state_dict(self) -> dict[str, dict[str, Any]]:
        """``{dotted module name: extra state}`` for every module that has some."""
        return {name: state for name, module in self.named_modules()
                if (state := module.get_extra_state()) is not None}

    def load_extra_state_dict(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        """Give each module its extra state back (names as :meth:`extra_state_dict`'s)."""
        modules = dict(self.named_modules())
        unknown = sorted(states.keys() - modules.keys())
        if unknown:
            msg = f"{self._where()}: extra state for modules it does not have: {unknown}"
            raise KeyError(msg)
        for name, state in states.items():
            modules[name].set_extra_state(state)

    # ---------------------------------------------------------------- state dicts

    def state_dict(self) -> dict[str, Array]:
        """Parameters and persistent buffers by dotted name (references, not copies), under
        PyTorch's names for the same layers."""
        state = {name: p.data for name, p in self.named_parameters()}
        state.update(self.named_buffers(persistent_only=True))
        return state

    def load_state_dict(self, state: Mapping[str, Any], *, strict: bool = True) -> LoadResult:
        """Copy arrays (of any namespace, or NumPy) into the parameters and buffers.

        Every name, shape and dtype is validated first (:meth:`check_state_dict`), so a failed
        load leaves the module untouched. Values are copied onto each array's own device.
        ``strict=False`` loads the entries that match and returns the others, as PyTorch does
        (for fine-tuning from another model's weights). A tied parameter's other names are
        accepted when they hold the same values.
        """
        result = self.check_state_dict(state, strict=strict)
        targets = self._state_targets()
        # Copies first: the values may be (views of) this module's own arrays.
        values = {name: backend_of(ref).asarray(state[name], dtype=_integer_dtype(ref), copy=True)
                  for name, (ref, _) in targets.items() if name in state}
        for name, value in values.items():
            ref, store = targets[name]
            if supports_views(namespace_of(ref)):  # in place: optimizers' views stay valid
                ref[...] = value
            else:
                store(value)
        for name, p in self.named_parameters():
            if name in values:
                p.grad = None
        return result

    def check_state_dict(self, state: Mapping[str, Any], *, strict: bool = True) -> LoadResult:
        """Raise unless every entry of ``state`` fits: KeyError (names; with ``strict``, the
        keys must be exactly the module's), ValueError (a shape) or TypeError (a dtype).
        Returns the missing and unexpected keys (empty when strict)."""
        targets = self._state_targets()
        aliases = self._tied_aliases()
        missing = sorted(targets.keys() - state.keys())
        unexpected = sorted(
            k for k in state.keys() - targets.keys()
            if k not in aliases
        )
        if strict and (missing or unexpected):
            msg = f"{self._where()}: state dict does not match the module's parameters"
            msg += name_mismatch(missing, unexpected)
            raise KeyError(msg)
        for name, (ref, _) in targets.items():
            if name in state:
                _check_entry(self._where(), name, state[name], ref)
        for alias, primary in aliases.items():
            if alias in state and primary in state:
                _check_same_values(self._where(), alias, state[alias], primary, state[primary])
        return LoadResult(missing, unexpected)

    def _state_targets(self) -> dict[str, tuple[Array, Callable[[Array], None]]]:
        """Every state-dict entry: its current array and how to store a new value there."""
        targets: dict[str, tuple[Array, Callable[[Array], None]]] = {}
        for name, p in self.named_parameters():
            targets[name] = (p.data, _parameter_store(p))
        for path, module in self.named_modules():
            skip = module.__dict__["_non_persistent"]
            for buffer, value in module.__dict__["_buffers"].items():
                if value is not None and buffer not in skip:
                    full = f"{path}.{buffer}" if path else buffer
                    targets[full] = (value, _buffer_store(module, buffer))
        return targets

    def _tied_aliases(self) -> dict[str, str]:
        """``{other name: first name}`` of parameters used in several places."""
        first: dict[int, str] = {}
        aliases: dict[str, str] = {}
        for name, p in self._named_parameters_all(""):
            if id(p) in first:
                aliases[name] = first[id(p)]
            else:
                first[id(p)] = name
        return aliases

    # ---------------------------------------------------------------- placement and modes

    def to(self, backend: Any = None, *, dtype: Any = None) -> Module:
        """Move every parameter and buffer to ``backend`` (a name, namespace or Backend) and/or
        cast the floating ones to ``dtype`` (``"float32"``, ``"float64"``); grads are reset.

        ``module.to("float64")`` casts on the module's own backend, as PyTorch's does.
        Optimizers hold parameters by reference: create them after moving the model.
        """
        if dtype is None and isinstance(backend, str) and backend in ("float32", "float64"):
            backend, dtype = None, backend
        if backend is None:
            current = self.backend
            if current is None:
                return self
            be = current
        else:
            be = backend if isinstance(backend, Backend) else get_backend(backend)
        target = None if dtype is None else be.dtype(dtype)
        for p in self.parameters():
            moved = _moved(p.data, be, target)
            if moved is not p.data:
                p.data, p.grad = moved, None
        for module in self.modules():
            for name, value in list(module.__dict__["_buffers"].items()):
                if value is not None:
                    setattr(module, name, _moved(value, be, target))
        return self

    @property
    def backend(self) -> Backend | None:
        """The backend of the module's parameters (None for a module without parameters)."""
        ref = self._reference_array()
        return None if ref is None else backend_of(ref)

    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and its descendants."""
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode (``train(False)``)."""
        return self.train(False)

    def extra_repr(self) -> str:
        """The text inside the parentheses of ``repr``."""
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def _moved(value: Array, be: Backend, dtype: Any) -> Array:
    """``value`` on ``be`` (and cast to ``dtype`` when floating), or itself when already so."""
    xp = namespace_of(value)
    floating = dtype is not None and xp.isdtype(value.dtype, "real floating")
    if backend_of(value) == be:
        if not floating or dtype_name(value.dtype) == dtype_name(dtype):
            return value
        return be.xp.astype(value, dtype)
    # A copy: the host view of another library's array may be read-only (JAX) or shared with
    # it (PyTorch on the CPU), and the library writes into its parameters and buffers.
    return be.asarray(value, dtype=dtype if floating else None, copy=True)


def _parameter_store(p: Parameter) -> Callable[[Array], None]:
    def store(value: Array) -> None:
        p.data = value

    return store


def _buffer_store(module: Module, name: str) -> Callable[[Array], None]:
    def store(value: Array) -> None:
        setattr(module, name, value)

    return store


def _check_entry(where: str, name: str, value: Any, ref: Array) -> None:
    shape = tuple(getattr(value, "shape", ()))
    if shape != tuple(ref.shape):
        msg = f"{where}: {name!r} has shape {tuple(ref.shape)}, state dict gives {shape}"
        raise ValueError(msg)
    got, want = dtype_name(getattr(value, "dtype", type(value))), dtype_name(ref.dtype)
    if got != want and not (got in _INTEGER_DTYPES and want in _INTEGER_DTYPES):
        msg = f"{where}: {name!r} has dtype {want}, state dict gives {got}"
        raise TypeError(msg)


def _integer_dtype(ref: Array) -> Any:
    """``ref``'s dtype when it is an integer one (a loaded integer is cast to it), else None
    (floating entries have the buffer's dtype already: :func:`_check_entry`)."""
    return ref.dtype if dtype_name(ref.dtype) in _INTEGER_DTYPES else None


def _check_same_values(where: str, alias: str, value: Any, primary: str, ref: Any) -> None:
    """A tied parameter's two entries must agree (a host comparison, at load time only)."""
    a, b = to_numpy(value), to_numpy(ref)  # host copies: the comparison is at the I/O edge
    if a.shape != b.shape or not bool((a == b).all()):
        msg = (f"{where}: {alias!r} and {primary!r} are one (tied) parameter, but the state "
               "dict gives them different values")
        raise ValueError(msg)


def _check_matches_parameters(
    x: Array,
    xp: Namespace,
    ref: Array,
    *,
    where: str,
    what: str = "input",
    ref_what: str = "the parameters",
    check_dtype: bool = True,
) -> None:
    if namespace_of(ref) is not xp or not same_device(x, ref, xp):
        msg = (
            f"{where}: {what} is {describe_placement(x)}; expected {describe_placement(ref)}, "
            f"where {ref_what} live (move it with model.backend.asarray(...))"
        )
        raise ValueError(msg)
    if check_dtype and x.dtype != ref.dtype:
        msg = (
            f"{where}: {what} has dtype {dtype_name(x.dtype)}; expected "
            f"{dtype_name(ref.dtype)}, the dtype of {ref_what} (cast it: nothing is promoted "
            "silently)"
        )
        raise TypeError(msg)


def _check_integer_input(x: Array, xp: Namespace, module: Module, ids_layer: Module) -> None:
    """Raise TypeError unless ``x`` holds integers (token ids for ``ids_layer``, the first
    layer of ``module``), naming the layer, the dtype and the shape."""
    if xp.isdtype(x.dtype, "integral"):
        return
    where = repr(ids_layer)
    if ids_layer is not module:
        where = f"{module._where()} (its first layer {where})"
    msg = (f"{where}: token ids must be integers, got {dtype_name(x.dtype)} of shape "
           f"{tuple(x.shape)} (an Embedding takes integer ids: cast them, e.g. to int64)")
    raise TypeError(msg)


def _checked_backprop(backprop: Backprop, y: Any, module: Module) -> Backprop:
    """Wrap a closure for the public boundary: validate ∂L/∂y and allow one call."""
    called = False

    def checked(dy: Any) -> Any:
        nonlocal called
        if called:
            msg = (
                f"{module._where()}: this backward closure was already used; run forward again "
                "to backpropagate again"
            )
            raise RuntimeError(msg)
        if isinstance(y, tuple):
            _check_gradient_tuple(dy, y, module._where())
        elif matching_namespace(dy, y) is None or dy.shape != y.shape:
            _explain_bad_gradient(dy, y, module._where())
        called = True
        return backprop(dy)

    return checked


def _check_gradient_tuple(dy: Any, y: tuple[Any, ...], where: str) -> None:
    if not isinstance(dy, tuple) or len(dy) != len(y):
        msg = f"{where}: the output is a tuple of {len(y)} arrays; dy must be one too"
        raise TypeError(msg)
    for d, out in zip(dy, y, strict=True):
        if isinstance(out, tuple):  # a nested output: an LSTM's (output, (h_n, c_n))
            if d is not None:
                _check_gradient_tuple(d, out, where)
        elif d is not None and (matching_namespace(d, out) is None or d.shape != out.shape):
            _explain_bad_gradient(d, out, where)


def _explain_bad_gradient(dy: Any, y: Array, where: str) -> None:
    """Raise the error that says how ∂L/∂y fails to match the output y."""
    check_array(dy, caller=where, what="the gradient dy")
    if tuple(dy.shape) != tuple(y.shape):
        msg = f"{where}: gradient dy has shape {tuple(dy.shape)}, output y has {tuple(y.shape)}"
        raise ValueError(msg)
    _check_matches_parameters(
        dy, namespace_of(dy), y, where=where, what="gradient dy", ref_what="the output y"
    )
