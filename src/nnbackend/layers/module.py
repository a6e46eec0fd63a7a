"""``Parameter`` and the ``Module`` base class: parameters, state, placement, forward protocol.

The training forward returns the output with its backward closure (Thinc's design)::

    y, backprop = module.forward(x)    # y = f(x); what backprop needs stays in the closure
    dx = backprop(dy)                  # ∂L/∂x from ∂L/∂y; accumulates every Parameter.grad

A closure may be called once (like PyTorch's graph, it is spent by the call); run the forward
again to backpropagate again. Inference, ``module(x)``, returns y and retains nothing.

Subclasses implement ``_forward(x, *, xp, input_grad) -> (y, backprop)`` and may override
``_infer(x, *, xp)`` and ``_check_input(x)``. The public :meth:`Module.forward` validates the
input once, at the boundary; inner layers of a container are called through ``_forward`` with
arrays the library made itself, so they skip the checks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

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
from ..backend import Backend, backend_of, dtype_name, get_backend, supports_views

__all__ = ["Module", "Parameter"]


class Parameter:
    """A trainable array and its accumulated gradient.

    Attributes
    ----------
    data : array
        The value; owned by the library (optimizers update it in place where the backend allows,
        and may rebind it to a view of their flat buffer).
    grad : array or None
        ∂L/∂data accumulated by backward passes since the last ``zero_grad``; same shape, dtype
        and device as ``data``.
    name : str
        The name within its module (``"weight"``, ``"bias"``).
    grad_buffer : array or None
        Where the first gradient after ``zero_grad`` is written (a view of an optimizer's flat
        gradient buffer), or None to take the gradient array as it comes. Rebinding ``data``
        to another array clears it.
    """

    __slots__ = ("_data", "grad", "grad_buffer", "name")

    def __init__(self, data: Array, name: str = "") -> None:
        self._data = data
        self.grad: Array | None = None
        self.grad_buffer: Array | None = None
        self.name = name

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
        live in the optimizer's flat buffer; ``grad`` is never kept by reference then.
        """
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
        return (
            f"Parameter({self.name!r}, shape={self.shape}, dtype={dtype_name(self.dtype)}, "
            f"{describe_placement(self.data)})"
        )


class Module:
    """Base class of layers and containers.

    Parameters and sub-modules assigned as attributes are registered in assignment order, so
    :meth:`named_parameters` yields stable names such as ``"0.weight"``.
    """

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
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

    # ---------------------------------------------------------------- forward protocol

    def forward(self, x: Array, *, input_grad: bool = True) -> tuple[Array, Backprop]:
        """Training forward: return ``(y, backprop)``; ``backprop(dy)`` returns ∂L/∂x.

        Parameters
        ----------
        x : array
            The input, on the module's namespace and device, in its dtype.
        input_grad : bool
            Compute ∂L/∂x in the backward pass; when False, ``backprop`` returns None and skips
            that work (the gradients of the parameters are still accumulated).
        """
        xp = self._check_input(x)
        y, backprop = self._forward(x, xp=xp, input_grad=input_grad)
        return y, _checked_backprop(backprop, y, self)

    def __call__(self, x: Array) -> Array:
        """Inference: y = f(x), retaining nothing for a backward pass."""
        return self._infer(x, xp=self._check_input(x))

    def _forward(self, x: Array, *, xp: Namespace, input_grad: bool) -> tuple[Array, Backprop]:
        raise NotImplementedError

    def _infer(self, x: Array, *, xp: Namespace) -> Array:
        return self._forward(x, xp=xp, input_grad=False)[0]

    def _check_input(self, x: Array) -> Namespace:
        """Validate an input at the public boundary and return its namespace."""
        ref = self._reference_array()
        if ref is not None:
            xp = matching_namespace(x, ref)
            if xp is not None:
                return xp
        where = self._where()
        xp = check_array(x, where=where, what="input")
        check_floating(x, xp, where=where, what="input")
        ref = self._reference_array()
        if ref is not None:
            _check_matches_parameters(x, xp, ref, where=where)
        return xp

    def _reference_array(self) -> Array | None:
        """The first parameter's data (the module's namespace, device and dtype), or None."""
        for p in self.parameters():
            return p.data
        return None

    def _where(self) -> str:
        return repr(self)

    # ---------------------------------------------------------------- parameters and state

    def children(self) -> Iterator[Module]:
        """The directly registered sub-modules, in registration order."""
        yield from self.__dict__["_modules"].values()

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Yield ``(dotted name, Parameter)`` for this module and its descendants, each once."""
        seen: set[int] = set()
        for name, p in self._named_parameters_all(prefix):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def _named_parameters_all(self, prefix: str) -> Iterator[tuple[str, Parameter]]:
        for name, p in self.__dict__["_parameters"].items():
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

    def state_dict(self) -> dict[str, Array]:
        """Map each dotted parameter name to its array (a reference, not a copy)."""
        return {name: p.data for name, p in self.named_parameters()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Copy arrays (of any namespace, or NumPy) into the parameters.

        Every name, shape and dtype is validated first (:meth:`check_state_dict`), so a failed
        load leaves the module untouched. Values are copied onto each parameter's own device.
        """
        self.check_state_dict(state)
        own = dict(self.named_parameters())
        # Copies first: the values may be (views of) this module's own parameters.
        values = {name: backend_of(p.data).asarray(state[name], copy=True)
                  for name, p in own.items()}
        for name, p in own.items():
            if supports_views(namespace_of(p.data)):  # in place: optimizers' views stay valid
                p.data[...] = values[name]
            else:
                p.data = values[name]
            p.grad = None

    def check_state_dict(self, state: Mapping[str, Any]) -> None:
        """Raise unless ``state`` names exactly this module's parameters, each with its shape
        and dtype: KeyError (names), ValueError (a shape) or TypeError (a dtype)."""
        own = dict(self.named_parameters())
        missing = sorted(own.keys() - state.keys())
        unexpected = sorted(state.keys() - own.keys())
        if missing or unexpected:
            msg = f"{self._where()}: state dict does not match the module's parameters"
            msg += name_mismatch(missing, unexpected)
            raise KeyError(msg)
        for name, p in own.items():
            value = state[name]
            shape = tuple(getattr(value, "shape", ()))
            if shape != p.shape:
                msg = f"{self._where()}: {name!r} has shape {p.shape}, state dict gives {shape}"
                raise ValueError(msg)
            got, want = dtype_name(getattr(value, "dtype", type(value))), dtype_name(p.dtype)
            if got != want:
                msg = f"{self._where()}: {name!r} has dtype {want}, state dict gives {got}"
                raise TypeError(msg)

    def to(self, backend: Any) -> Module:
        """Move every parameter to ``backend`` (a name, namespace or Backend); grads are reset.

        Optimizers hold parameters by reference: create them after moving the model.
        """
        be = backend if isinstance(backend, Backend) else get_backend(backend)
        for p in self.parameters():
            if backend_of(p.data) == be:
                continue
            # A copy: the host view of another library's array may be read-only (JAX) or shared
            # with it (PyTorch on the CPU), and the library writes into its parameters.
            p.data, p.grad = be.asarray(p.data, copy=True), None
        return self

    @property
    def backend(self) -> Backend | None:
        """The backend of the module's parameters (None for a module without parameters)."""
        ref = self._reference_array()
        return None if ref is None else backend_of(ref)

    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and its descendants."""
        object.__setattr__(self, "training", mode)
        for child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode (``train(False)``)."""
        return self.train(False)

    def extra_repr(self) -> str:
        """The text inside the parentheses of ``repr``."""
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def _check_matches_parameters(
    x: Array,
    xp: Namespace,
    ref: Array,
    *,
    where: str,
    what: str = "input",
    ref_what: str = "the parameters",
) -> None:
    if namespace_of(ref) is not xp or not same_device(x, ref, xp):
        msg = (
            f"{where}: {what} is {describe_placement(x)}; expected {describe_placement(ref)}, "
            f"where {ref_what} live (move it with model.backend.asarray(...))"
        )
        raise ValueError(msg)
    if x.dtype != ref.dtype:
        msg = (
            f"{where}: {what} has dtype {dtype_name(x.dtype)}; expected "
            f"{dtype_name(ref.dtype)}, the dtype of {ref_what} (cast it: nothing is promoted "
            "silently)"
        )
        raise TypeError(msg)


def _checked_backprop(backprop: Backprop, y: Array, module: Module) -> Backprop:
    """Wrap a closure for the public boundary: validate ∂L/∂y and allow one call."""
    called = False

    def checked(dy: Array) -> Array | None:
        nonlocal called
        if called:
            msg = (
                f"{module._where()}: this backward closure was already used; run forward again "
                "to backpropagate again"
            )
            raise RuntimeError(msg)
        if matching_namespace(dy, y) is None or dy.shape != y.shape:
            _explain_bad_gradient(dy, y, module._where())
        called = True
        return backprop(dy)

    return checked


def _explain_bad_gradient(dy: Any, y: Array, where: str) -> None:
    """Raise the error that says how ∂L/∂y fails to match the output y."""
    check_array(dy, where=where, what="the gradient dy")
    if tuple(dy.shape) != tuple(y.shape):
        msg = f"{where}: gradient dy has shape {tuple(dy.shape)}, output y has {tuple(y.shape)}"
        raise ValueError(msg)
    _check_matches_parameters(
        dy, namespace_of(dy), y, where=where, what="gradient dy", ref_what="the output y"
    )
