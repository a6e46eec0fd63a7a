"""Model descriptions: a JSON record of a model's layers and their arguments, and the model
rebuilt from one.

::

    desc = nb.layers.describe(model)        # {"type": "Sequential", "config": {"layers": [...]}}
    text = json.dumps(desc)                 # plain JSON: checkpoints record it
    twin = nb.layers.build(json.loads(text), backend="torch")
    twin.load_state_dict(model.state_dict())   # same parameter and buffer names and shapes

A description node is ``{"type": KIND, "config": {argument: value}}``. ``config`` holds the
layer's constructor arguments that define the architecture, as JSON values (str, int, float,
bool, None, lists, and dicts with string keys) or other nodes (a layer taking layers: a
``Sequential``'s ``"layers"``, a ``Residual``'s ``"block"``). It records neither placement (the
backend is an argument of :func:`build`) nor how arrays were first filled (a Linear's seed, an
initialiser given as a function): the values come from a state dict or a checkpoint, with the
extra state (a dropout stream's position). Tuples come back as lists.

How a layer takes part
----------------------
- ``config(self) -> dict | None``: the constructor's keyword arguments, as above; a value may
  be a Module (or a list of them), described in turn. A layer without ``config`` (or returning
  None) cannot be described, and :func:`describe` raises naming it.
- ``from_config(cls, config) -> Module`` (a classmethod, optional) when the constructor does not
  take ``config`` as keyword arguments: ``Sequential(*layers)`` is built from
  ``{"layers": [...]}``. Without it, the layer is built as ``cls(**config)``, with ``backend=``
  (and ``dtype=``, when :func:`build` is given one) added where the constructor takes them.
- ``tied_parameters(self) -> dict`` (optional): ``{other name: first name}`` (relative to the
  layer) of the parameters its constructor ties, e.g. a language model's output projection
  and token embedding. A tie the layer makes itself is rebuilt with it; any other parameter
  (or module) used in two places makes :func:`describe` raise.

The kinds: built-in layers and those given to :func:`register` by their registered name (the
class name); any other class by ``"package.module:QualName"``. :func:`build` builds such a
class only when the caller lists it in ``allow_classes``: a description is data (a checkpoint
is untrusted input), and the class it names is never imported on its say-so.

Joining the registry (a new built-in layer: give it ``config()``, and ``from_config`` if its
constructor needs one, then add it at the end of this module)::

    register(Conv2d, state_size=_conv_size)   # kind "Conv2d"; the size of what it allocates
    register(Dropout, state_size=_nothing)    # a layer without arrays of its own
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

from ..backend import get_backend, use_backend
from .activations import (
    GELU,
    Identity,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from .attention import MultiheadAttention
from .combinators import Parallel, Residual
from .conv import Conv1d, Conv2d, conv_state_size
from .dropout import Dropout, Dropout2d
from .embedding import Embedding
from .language_model import TransformerLM
from .linear import Linear
from .module import Module
from .normalization import BatchNorm1d, BatchNorm2d, LayerNorm, RMSNorm, SyncBatchNorm
from .pooling import AdaptiveAvgPool2d, AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d
from .recurrent import GRU, LSTM, RNN, RecurrentOutput, recurrent_state_size
from .sequential import Sequential
from .shape import Flatten, Unflatten
from .transformer import TransformerEncoderLayer

__all__ = ["MAX_DEPTH", "AllowedClasses", "DescriptionError", "build", "describe", "register"]

MAX_DEPTH = 64
"""The deepest nesting a description may have, counting every node, list and dict (a
Sequential inside a Sequential is two levels deeper: its node and the ``"layers"`` list)."""

_ROOT = "model"
# Arguments a description may not set: placement is build's to choose.
_RESERVED_ARGUMENTS = frozenset({"backend"})

M = TypeVar("M", bound=type[Module])
AllowedClasses: TypeAlias = "type[Module] | str | Iterable[type[Module] | str]"
"""What ``allow_classes`` takes: classes, or names of them to import, one or several."""


class DescriptionError(ValueError):
    """A model that cannot be described, or a description that cannot be built.

    The message names the place in the description (``model.layers[2].block``, followed by the
    layer's kind once it is known) and the cause; :attr:`path` holds that place.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"model description: {path}: {message}")
        self.path = path


@dataclass(frozen=True)
class _Kind:
    """A registered layer kind: its class and, optionally, the size of what it allocates."""

    name: str
    cls: type[Module]
    state_size: Callable[[Mapping[str, Any]], int] | None


_KINDS: dict[str, _Kind] = {}


def register(
    cls: M, name: str | None = None, *,
    state_size: Callable[[Mapping[str, Any]], int] | None = None,
) -> M:
    """Make ``cls`` a kind that :func:`describe` names and :func:`build` builds by ``name``.

    Built-in layers are registered; register your own to build it from any description without
    ``allow_classes`` (only register classes you trust to be built from untrusted files).

    Parameters
    ----------
    cls : type
        A Module subclass with ``config()`` (and ``from_config`` if its constructor needs it).
    name : str, optional
        The kind's name (default: the class name); no ``":"``, and not another class's.
    state_size : callable, optional
        ``state_size(config) -> int``: the number of array elements a layer built from
        ``config`` allocates itself (its parameters and buffers, not its sub-layers'), computed
        without building it. It lets :func:`build`'s ``max_elements`` (and so
        :func:`nnbackend.checkpoint.load_model`) refuse a description that would allocate more
        than its checkpoint holds before allocating anything. It must not raise: return 0 for
        arguments the constructor will refuse.

    Returns
    -------
    type
        ``cls``, so that ``register`` can decorate a class.
    """
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        msg = f"register: expected a Module subclass, got {cls!r}"
        raise TypeError(msg)
    kind = cls.__name__ if name is None else name
    if not isinstance(kind, str) or not kind or ":" in kind:
        msg = f"register: a kind's name is a non-empty string without ':', got {kind!r}"
        raise ValueError(msg)
    known = _KINDS.get(kind)
    if known is not None and known.cls is not cls:
        msg = f"register: kind {kind!r} is already {_class_key(known.cls)}"
        raise ValueError(msg)
    _KINDS[kind] = _Kind(kind, cls, state_size)
    return cls


def _class_key(cls: type) -> str:
    """``"package.module:QualName"``: how a description names an unregistered class."""
    return f"{cls.__module__}:{cls.__qualname__}"


def _kind_of(cls: type[Module]) -> str:
    for kind in _KINDS.values():
        if kind.cls is cls:
            return kind.name
    return _class_key(cls)


# --------------------------------------------------------------------------------------------
# Describing


def describe(model: Module) -> dict[str, Any]:
    """A JSON-able description of ``model``: its layers' kinds and arguments, nested.

    Parameters
    ----------
    model : Module
        Every layer in it must have a ``config()`` (all built-in layers do).

    Returns
    -------
    dict
        ``{"type": KIND, "config": {...}}``, nodes nested in the configs of containers;
        ``json.dumps`` writes it and :func:`build` rebuilds an equivalent model from it.

    Raises
    ------
    DescriptionError
        A layer has no ``config()`` (or it returned None), a config holds a value that is not
        JSON or a layer, a constructor would not accept the config, or one module (or one
        parameter: tied weights) is used in two places, which a rebuilt model could not share
        (except the ties a layer makes itself and declares in ``tied_parameters()``, as
        :class:`~nnbackend.layers.TransformerLM`'s output projection).
        The message names the layer's place (``model.layers[1]``).
    """
    if not isinstance(model, Module):
        msg = f"describe: expected a Module, got {type(model).__name__}"
        raise TypeError(msg)
    classes: dict[str, type[Module]] = {}
    description = _describe(model, _ROOT, {}, classes)
    aliases = _undeclared_ties(model)
    if aliases:
        alias, first = next(iter(aliases.items()))
        msg = (f"parameter {alias!r} is the parameter {first!r} (tied weights): a rebuilt model "
               "would hold two (a layer that ties its own parameters declares it in "
               "tied_parameters())")
        raise DescriptionError(_ROOT, msg)
    _parse(description, _ROOT, 0, _Allowed(classes))  # what build will check: fail here first
    return description


def _undeclared_ties(model: Module) -> dict[str, str]:
    """The tied parameters (``{other name: first name}``) that no layer declares as its own.

    A layer that creates a tie in its constructor (a language model's output projection tied
    to its token embedding) returns it from ``tied_parameters()`` (names relative to the
    layer): building it from its config ties it again, so the description stays true. Ties
    made by hand after construction are not rebuilt, and stay refused.
    """
    declared: dict[str, str] = {}
    for path, module in model.named_modules():
        method = getattr(module, "tied_parameters", None)
        ties = method() if callable(method) else {}
        prefix = f"{path}." if path else ""
        declared.update({prefix + alias: prefix + first for alias, first in ties.items()})
    return {alias: first for alias, first in model._tied_aliases().items()
            if declared.get(alias) != first}


def _describe(module: Module, path: str, seen: dict[int, str],
              classes: dict[str, type[Module]]) -> dict[str, Any]:
    where = f"{path} ({type(module).__name__})"
    if id(module) in seen:
        msg = (f"is the module at {seen[id(module)]} again: a module used in two places (tied "
               "weights) cannot be described, a rebuilt model would hold two")
        raise DescriptionError(where, msg)
    seen[id(module)] = path
    method = getattr(module, "config", None)
    config = method() if callable(method) else None
    if config is None:
        msg = (f"{type(module).__name__} cannot be described: it has no config() returning its "
               "constructor's arguments")
        raise DescriptionError(where, msg)
    if not isinstance(config, dict):
        msg = f"config() must return a dict, got {type(config).__name__}"
        raise DescriptionError(where, msg)
    kind = _kind_of(type(module))
    if ":" in kind:
        classes[kind] = type(module)
    encoded = {}
    for key, value in config.items():
        if not isinstance(key, str):
            msg = f"config() has a key {key!r} that is not a string"
            raise DescriptionError(where, msg)
        encoded[key] = _encode(value, f"{path}.{key}", seen, classes)
    return {"type": kind, "config": encoded}


def _encode(value: Any, path: str, seen: dict[int, str], classes: dict[str, type[Module]]
            ) -> Any:
    """A config value as JSON: layers described, tuples as lists."""
    if isinstance(value, Module):
        return _describe(value, path, seen, classes)
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple):
        return [_encode(v, f"{path}[{i}]", seen, classes) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if "type" in value:  # it would read back as a layer's node
            msg = "a dict argument may not have a 'type' key (a description's layers do)"
            raise DescriptionError(path, msg)
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                msg = f"a dict argument has a key {key!r} that is not a string"
                raise DescriptionError(path, msg)
            out[key] = _encode(item, f"{path}.{key}", seen, classes)
        return out
    msg = (f"is a {type(value).__name__} ({value!r:.60}); a config holds JSON values (str, int, "
           "float, bool, None, lists and dicts) and layers")
    raise DescriptionError(path, msg)


# --------------------------------------------------------------------------------------------
# Checking a description (no layer is built, nothing imported)


class _Allowed:
    """The classes a description may name by ``"module:QualName"``, by that name."""

    def __init__(self, classes: Mapping[str, type[Module]]) -> None:
        self.classes = dict(classes)

    @classmethod
    def of(cls, allow_classes: AllowedClasses) -> _Allowed:
        """The caller's list: classes, or ``"module:QualName"`` strings that the caller asks to
        import (never a name from the description itself)."""
        if isinstance(allow_classes, str | type):
            allow_classes = [allow_classes]
        classes: dict[str, type[Module]] = {}
        for entry in allow_classes:
            found = _import_class(entry) if isinstance(entry, str) else entry
            if not (isinstance(found, type) and issubclass(found, Module)):
                msg = f"build: allow_classes holds {entry!r}, which is not a Module subclass"
                raise TypeError(msg)
            key = _class_key(found)
            if classes.get(key, found) is not found:
                msg = f"build: allow_classes holds two classes named {key!r}"
                raise ValueError(msg)
            classes[key] = found
        return cls(classes)


def _import_class(name: str) -> Any:
    """The object ``"package.module:Qual.Name"`` names, importing its module (the caller's
    explicit request)."""
    module_name, sep, qualname = name.partition(":")
    if not sep or not module_name or not qualname:
        msg = f"build: allow_classes names classes as 'package.module:QualName', got {name!r}"
        raise ValueError(msg)
    found: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


@dataclass(frozen=True)
class _Node:
    """A checked description node: where it is, its class and its decoded config."""

    path: str
    kind: str
    cls: type[Module]
    state_size: Callable[[Mapping[str, Any]], int] | None
    config: dict[str, Any]  # nested nodes as _Node, lists as lists


def _parse(value: Any, path: str, depth: int, allowed: _Allowed) -> _Node:
    """Check one node (and what it nests) without building or importing anything."""
    if depth >= MAX_DEPTH:
        msg = f"layers and values are nested more than {MAX_DEPTH} deep"
        raise DescriptionError(path, msg)
    if not isinstance(value, dict) or set(value) != {"type", "config"}:
        got = sorted(value) if isinstance(value, dict) else type(value).__name__
        msg = f"a layer is {{'type': str, 'config': dict}}, got {got}"
        raise DescriptionError(path, msg)
    kind, config = value["type"], value["config"]
    if not isinstance(kind, str):
        msg = f"'type' must be a string, got {kind!r:.60}"
        raise DescriptionError(path, msg)
    cls, state_size = _resolve(kind, path, allowed)
    where = f"{path} ({kind})"
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        msg = f"'config' must be a dict with string keys, got {config!r:.60}"
        raise DescriptionError(where, msg)
    reserved = sorted(_RESERVED_ARGUMENTS & config.keys())
    if reserved:
        msg = f"a description does not choose placement ({reserved[0]!r}): build(backend=...)"
        raise DescriptionError(where, msg)
    if _from_config(cls) is None:
        _check_arguments(cls, config, where)
    decoded = {key: _decode(item, f"{path}.{key}", depth, allowed) for key, item in config.items()}
    return _Node(path, kind, cls, state_size, decoded)


def _resolve(kind: str, path: str, allowed: _Allowed
             ) -> tuple[type[Module], Callable[[Mapping[str, Any]], int] | None]:
    registered = _KINDS.get(kind)
    if registered is not None:
        return registered.cls, registered.state_size
    if ":" not in kind:
        msg = f"unknown layer kind {kind!r:.80}; the kinds are {', '.join(sorted(_KINDS))}"
        raise DescriptionError(path, msg)
    cls = allowed.classes.get(kind)
    if cls is None:
        msg = (f"names the class {kind!r:.120}, which is not in allow_classes: pass "
               "allow_classes=[TheClass] to build it (a description never imports a class "
               "itself)")
        raise DescriptionError(path, msg)
    return cls, None


def _check_arguments(cls: type[Module], config: Mapping[str, Any], where: str) -> None:
    """The config's keys against the constructor's keyword parameters."""
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):  # no signature to check: the constructor will say
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    names = [p.name for p in parameters
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
             and p.name not in _RESERVED_ARGUMENTS]
    unknown = sorted(config.keys() - set(names))
    if unknown:
        msg = (f"unknown argument {unknown[0]!r:.60}; {cls.__name__} takes "
               f"{', '.join(names) or 'no arguments'}")
        raise DescriptionError(where, msg)
    missing = [p.name for p in parameters
               if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               and p.name not in config]
    if missing:
        msg = f"missing argument {missing[0]!r} of {cls.__name__}"
        raise DescriptionError(where, msg)


def _decode(value: Any, path: str, depth: int, allowed: _Allowed) -> Any:
    """A config value: a nested node (a dict with a 'type'), a list, or a JSON value."""
    if isinstance(value, dict | list) and depth + 1 >= MAX_DEPTH:
        msg = f"layers and values are nested more than {MAX_DEPTH} deep"
        raise DescriptionError(path, msg)
    if isinstance(value, dict):
        if "type" in value:
            return _parse(value, path, depth + 1, allowed)
        return {key: _decode(item, f"{path}.{key}", depth + 1, allowed)
                for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item, f"{path}[{i}]", depth + 1, allowed) for i, item in enumerate(value)]
    if value is None or isinstance(value, str | bool | int | float):
        return value
    msg = f"is a {type(value).__name__}, not a JSON value"
    raise DescriptionError(path, msg)


def _nodes(value: Any) -> Iterable[_Node]:
    """The nodes directly inside a decoded config value."""
    if isinstance(value, _Node):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _nodes(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _nodes(item)


def _elements(node: _Node) -> int | None:
    """The array elements the built model will allocate (None: a kind that does not say)."""
    if node.state_size is None:
        return None
    total = node.state_size(node.config)
    for child in (n for item in node.config.values() for n in _nodes(item)):
        inner = _elements(child)
        if inner is None:
            return None
        total += inner
    return total


# --------------------------------------------------------------------------------------------
# Building


def build(
    description: Mapping[str, Any],
    *,
    backend: Any = None,
    dtype: Any = None,
    allow_classes: AllowedClasses = (),
    max_elements: int | None = None,
) -> Module:
    """The model a description (from :func:`describe`) describes, newly initialised.

    The whole description is checked before any layer is built: its structure, every kind
    (registered, or a class in ``allow_classes``), every argument's name against the
    constructor, and the size it would allocate against ``max_elements``. The rebuilt model has
    the parameter and buffer names, shapes and dtypes of the described one; load its values
    with ``load_state_dict`` (or use :func:`nnbackend.checkpoint.load_model`).

    Parameters
    ----------
    description : dict
        ``{"type": KIND, "config": {...}}`` as :func:`describe` returns it (or as JSON gives it
        back).
    backend : optional
        Where the parameters are created (a name, namespace or Backend; default: the current
        one). Layers built by ``cls(**config)`` receive it as ``backend=`` when they take one;
        every layer is built inside ``use_backend(backend)``.
    dtype : optional
        When given, replaces the ``dtype`` argument of every layer that takes one.
    allow_classes : class, "module:QualName" string, or an iterable of them
        The unregistered classes the description may name. A string is imported: list only
        names you chose, never names read from the description.
    max_elements : int, optional
        Refuse (before building anything) a description whose layers would allocate more array
        elements; counted through the kinds' ``state_size`` (see :func:`register`), so a
        description holding an allowed class without one is not bounded.

    Raises
    ------
    DescriptionError
        The description is malformed, names an unknown kind or a class not allowed, gives an
        argument the constructor does not take (or misses one), exceeds ``max_elements``, or a
        constructor refused its arguments (its TypeError or ValueError, with the place).
    """
    node = _parse(description, _ROOT, 0, _Allowed.of(allow_classes))
    if max_elements is not None:
        elements = _elements(node)
        if elements is not None and elements > max_elements:
            msg = (f"its layers would allocate {elements} array elements (from their "
                   f"arguments), more than the {max_elements} allowed")
            raise DescriptionError(_ROOT, msg)
    be = get_backend(backend)
    with use_backend(be):
        return _construct(node, be, dtype)


def _construct(node: _Node, be: Any, dtype: Any) -> Module:
    config = {key: _built(value, be, dtype) for key, value in node.config.items()}
    factory = _from_config(node.cls)
    try:
        if factory is not None:
            module = factory(config)
        else:
            config.update(_placement(node.cls, be, dtype))
            module = node.cls(**config)
    except DescriptionError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        msg = f"{node.kind} refused its arguments: {exc}"
        raise DescriptionError(f"{node.path} ({node.kind})", msg) from exc
    if not isinstance(module, node.cls):
        msg = f"from_config returned a {type(module).__name__}, not a {node.cls.__name__}"
        raise DescriptionError(f"{node.path} ({node.kind})", msg)
    return module


def _built(value: Any, be: Any, dtype: Any) -> Any:
    if isinstance(value, _Node):
        return _construct(value, be, dtype)
    if isinstance(value, list):
        return [_built(item, be, dtype) for item in value]
    if isinstance(value, dict):
        return {key: _built(item, be, dtype) for key, item in value.items()}
    return value


def _from_config(cls: type[Module]) -> Callable[[dict[str, Any]], Module] | None:
    """The class's own ``from_config``, or None to build it as ``cls(**config)`` (also when a
    base class's default merely does that)."""
    factory = getattr(cls, "from_config", None)
    default = getattr(Module, "from_config", None)
    if factory is None or getattr(factory, "__func__", factory) is \
            getattr(default, "__func__", default):
        return None
    return factory  # type: ignore[no-any-return]


def _placement(cls: type[Module], be: Any, dtype: Any) -> dict[str, Any]:
    """``backend=`` (and ``dtype=`` when overridden) for a constructor that takes them."""
    try:
        names = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return {}
    extra: dict[str, Any] = {}
    if "backend" in names:
        extra["backend"] = be
    if dtype is not None and "dtype" in names:
        extra["dtype"] = dtype
    return extra


# --------------------------------------------------------------------------------------------
# The built-in kinds


def _count(value: Any) -> int:
    """A positive int argument, else 0 (the constructor refuses it with its own message)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _linear_size(config: Mapping[str, Any]) -> int:
    """W (out, in) and b (out,): what Linear allocates."""
    n_in, n_out = _count(config.get("in_features")), _count(config.get("out_features"))
    return n_out * n_in + (n_out if config.get("bias", True) else 0)


def _nothing(config: Mapping[str, Any]) -> int:
    return 0


register(Linear, state_size=_linear_size)
# Containers own no arrays themselves (their children are counted in turn); dropout's stream
# is extra state, not an array.
for _layer in (Sequential, Residual, Parallel, Identity, ReLU, Sigmoid, Tanh, LeakyReLU, Softmax,
               LogSoftmax, Dropout):
    register(_layer, state_size=_nothing)


def _batch_norm_size(config: Mapping[str, Any]) -> int:
    """γ and β (affine) and the running mean, variance and count (tracked): BatchNorm's."""
    c, affine = _count(config.get("num_features")), config.get("affine", True)
    return (c if affine else 0) + (c if affine and config.get("bias", True) else 0) + (
        2 * c + 1 if config.get("track_running_stats", True) else 0)


register(BatchNorm1d, state_size=_batch_norm_size)
register(BatchNorm2d, state_size=_batch_norm_size)
register(SyncBatchNorm, state_size=_batch_norm_size)
register(Dropout2d, state_size=_nothing)

# Pooling and reshaping layers hold no arrays.
for _shaping in (MaxPool1d, MaxPool2d, AvgPool1d, AvgPool2d, AdaptiveAvgPool2d, Flatten,
                 Unflatten):
    register(_shaping, state_size=_nothing)

register(Conv1d, state_size=lambda config: conv_state_size(config, 1))
register(Conv2d, state_size=lambda config: conv_state_size(config, 2))


def _attention_size(config: Mapping[str, Any]) -> int:
    """in_proj (3E, E) and out_proj (E, E), with their biases: MultiheadAttention's."""
    e, bias = _count(config.get("embed_dim")), config.get("bias", True)
    return 4 * e * e + (4 * e if bias else 0)


register(MultiheadAttention, state_size=_attention_size)


def _transformer_size(config: Mapping[str, Any]) -> int:
    """Everything TransformerEncoderLayer builds (its sub-layers are not in the description):
    the self-attention, the two feed-forward maps and the two norms."""
    d, f = _count(config.get("d_model")), _count(config.get("dim_feedforward", 2048))
    bias = config.get("bias", True)
    return (_attention_size({"embed_dim": d, "bias": bias}) + 2 * d * f
            + (f + d if bias else 0) + 2 * d * (2 if bias else 1))


register(TransformerEncoderLayer, state_size=_transformer_size)

def _language_model_size(config: Mapping[str, Any]) -> int:
    """Everything TransformerLM builds itself: both embeddings (the output projection is the
    token embedding), every layer (attention included), the final norm."""
    v, d, c = (_count(config.get(key)) for key in ("vocab_size", "d_model", "context"))
    f = _count(config.get("dim_feedforward", 4 * d))
    per_layer = _transformer_size({"d_model": d, "dim_feedforward": f})
    return (v + c) * d + _count(config.get("num_layers", 2)) * per_layer + 2 * d


register(TransformerLM, state_size=_language_model_size)

# Recurrent layers: their weights and biases per layer and direction; RecurrentOutput none.
for _recurrent in (RNN, LSTM, GRU):
    register(_recurrent, state_size=recurrent_state_size(_recurrent))
register(RecurrentOutput, state_size=_nothing)
register(Embedding, state_size=lambda config: _count(config.get("num_embeddings"))
         * _count(config.get("embedding_dim")))


def _trailing_norm_size(config: Mapping[str, Any]) -> int:
    """γ (and β for LayerNorm with bias), each of shape normalized_shape."""
    if not config.get("elementwise_affine", True):
        return 0
    shape = config.get("normalized_shape")
    size = 1
    for n in shape if isinstance(shape, list) else [shape]:
        size *= _count(n)
    return size * (2 if config.get("bias", False) else 1)


register(LayerNorm, state_size=lambda config: _trailing_norm_size({"bias": True, **config}))
register(RMSNorm, state_size=_trailing_norm_size)

for _activation in (GELU, SiLU, Softplus):
    register(_activation, state_size=_nothing)
