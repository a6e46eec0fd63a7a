"""Declarative hyperparameters: one list per optimizer and schedule.

Each optimizer and learning-rate schedule declares its settings once, as a tuple of
:class:`Hyperparameter` entries (name, default, check)::

    class Adam(Optimizer):
        HYPERPARAMETERS = (
            Hyperparameter("lr", 1e-3, nonnegative, positional=True),
            Hyperparameter("betas", (0.9, 0.999), pair_of_fractions),
            Hyperparameter("eps", 1e-8, positive),
            Hyperparameter("weight_decay", 0.0, nonnegative),
            Hyperparameter("amsgrad", False, flag),
        )

    class AdamW(Adam):
        HYPERPARAMETERS = with_defaults(Adam.HYPERPARAMETERS, weight_decay=1e-2)

That list is the only place the names, defaults and checks live: the constructor's signature
(``inspect.signature(Adam)``), the validation at construction, of each parameter group, of an
assignment (``opt.lr = x``, ``group["lr"] = x``) and of a loaded state dict, the state dict's
``hyperparameters`` and ``param_groups``, checkpoint metadata and ``repr`` are all derived from it.

A check is a function ``check(value, where, name) -> value``: it returns the value normalised to a
plain Python value (a NumPy scalar becomes a float, a list of betas a tuple) or raises TypeError or
ValueError with a message that starts with ``where`` (the class, or the class and the method) and
names the setting (``"Adam: betas[1] must lie in [0, 1), got 1.0"``). The checks here adapt the
shared ones in :mod:`nnbackend._checks`, so a message reads the same for every optimizer, schedule
and layer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple

from .._checks import (
    check_flag,
    check_fraction,
    check_int,
    check_nonnegative,
    check_number,
    check_positive,
)

__all__ = [
    "REQUIRED",
    "Check",
    "Hyperparameter",
    "bind",
    "flag",
    "fraction",
    "nonnegative",
    "nonnegative_int",
    "nonnegative_or_per_group",
    "one_of",
    "open_unit_interval",
    "optional",
    "pair_of_fractions",
    "positive",
    "positive_int",
    "signature",
    "unit_interval",
    "with_defaults",
]

Check = Callable[[Any, str, str], Any]
"""``check(value, where, name) -> normalised value``; raises TypeError/ValueError naming both."""


class _Required:
    """The default of a hyperparameter that has none (SGD's learning rate)."""

    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Final = _Required()
"""The default of a hyperparameter that must be given (to the constructor or to every group)."""


class Hyperparameter(NamedTuple):
    """One setting of an optimizer or a schedule.

    Attributes
    ----------
    name : str
        The keyword (and attribute) name.
    default : object
        The value when none is given, or :data:`REQUIRED`.
    check : Check
        Validates and normalises a value: ``check(value, where, name)``.
    positional : bool
        Whether it may also be given by position (after the optimizer's ``params`` or the
        schedule's ``optimizer``, in list order); the others are keyword-only.
    saved : bool
        Whether a schedule records it in its state dict's ``config`` (False for an object such
        as LinearWarmup's ``after``, saved on its own).
    """

    name: str
    default: Any
    check: Check
    positional: bool = False
    saved: bool = True


def with_defaults(spec: Sequence[Hyperparameter], **defaults: Any) -> tuple[Hyperparameter, ...]:
    """``spec`` with other defaults for the named entries (AdamW: Adam's list, λ = 0.01)."""
    unknown = sorted(defaults.keys() - {h.name for h in spec})
    if unknown:
        msg = f"with_defaults: no hyperparameters {unknown} in {[h.name for h in spec]}"
        raise KeyError(msg)
    return tuple(h._replace(default=defaults.get(h.name, h.default)) for h in spec)


def signature(
    spec: Sequence[Hyperparameter],
    *,
    leading: Iterable[inspect.Parameter] = (),
    trailing: Iterable[inspect.Parameter] = (),
) -> inspect.Signature:
    """The call signature ``spec`` describes, between ``leading`` and ``trailing`` parameters."""
    kinds = {True: inspect.Parameter.POSITIONAL_OR_KEYWORD, False: inspect.Parameter.KEYWORD_ONLY}
    params = [
        inspect.Parameter(
            h.name, kinds[h.positional],
            default=inspect.Parameter.empty if h.default is REQUIRED else h.default,
        )
        for h in spec
    ]
    return inspect.Signature([*leading, *params, *trailing])


def bind(spec: Sequence[Hyperparameter], args: tuple[Any, ...], kwargs: Mapping[str, Any], *,
         where: str, missing_ok: bool = False) -> dict[str, Any]:
    """Every hyperparameter of ``spec`` from a call's ``args`` and ``kwargs``, defaults filled in;
    not yet checked. A required one that is missing is :data:`REQUIRED` when ``missing_ok``
    (an optimizer's groups may give it), else an error.

    Raises TypeError as Python does for a bad call (a required argument missing, too many
    positional arguments, one given twice, an unknown keyword), prefixed with ``where`` and,
    for an unknown keyword, listing the ones ``where`` takes.
    """
    empty = inspect.Parameter.empty
    params = [
        inspect.Parameter(
            h.name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD if h.positional
            else inspect.Parameter.KEYWORD_ONLY,
            default=empty if h.default is REQUIRED and not missing_ok else h.default,
        )
        for h in spec
    ]
    try:
        bound = inspect.Signature(params).bind(*args, **kwargs)
    except TypeError as exc:
        msg = f"{where}: {exc}"
        if "unexpected keyword" in str(exc):
            msg += f"; {where} takes {', '.join(h.name for h in spec)}"
        raise TypeError(msg) from None
    bound.apply_defaults()
    return dict(bound.arguments)


# -------------------------------------------------------------------------------------------
# Checks


def nonnegative(value: Any, where: str, name: str) -> float:
    """A finite real number ≥ 0 (a learning rate, a weight decay)."""
    return check_nonnegative(value, caller=where, name=name)


def positive(value: Any, where: str, name: str) -> float:
    """A finite real number > 0 (an ε, a decay factor γ)."""
    return check_positive(value, caller=where, name=name)


def fraction(value: Any, where: str, name: str) -> float:
    """A real number in [0, 1) (a decay rate: 1 would never forget, above 1 diverges)."""
    return check_fraction(value, caller=where, name=name)


def flag(value: Any, where: str, name: str) -> bool:
    """A Python bool."""
    return check_flag(value, caller=where, name=name)


def pair_of_fractions(value: Any, where: str, name: str) -> tuple[float, float]:
    """Two decay rates in [0, 1), as a tuple (Adam's betas; a JSON list loads as one)."""
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence) or len(
        value
    ) != 2:
        msg = f"{where}: {name} must be a pair ({name}[0], {name}[1]), got {value!r}"
        if name == "betas":  # the name every Adam user knows them by
            msg = f"{where}: betas must be a pair (beta1, beta2), got {value!r}"
        raise TypeError(msg)
    return (fraction(value[0], where, f"{name}[0]"), fraction(value[1], where, f"{name}[1]"))


def nonnegative_int(value: Any, where: str, name: str) -> int:
    """A Python int ≥ 0 (bools and floats refused)."""
    return check_int(value, what=f"{where}: {name}", minimum=0)


def positive_int(value: Any, where: str, name: str) -> int:
    """A Python int ≥ 1 (bools and floats refused)."""
    return check_int(value, what=f"{where}: {name}", minimum=1)


def unit_interval(value: Any, where: str, name: str) -> float:
    """A real number in [0, 1] (a start factor)."""
    out = check_number(value, caller=where, name=name)
    if not 0.0 <= out <= 1.0:
        msg = f"{where}: {name} must lie in [0, 1], got {value!r}"
        raise ValueError(msg)
    return out


def open_unit_interval(value: Any, where: str, name: str) -> float:
    """A real number in (0, 1) (a reduction factor: 0 would stop training, 1 do nothing)."""
    out = check_number(value, caller=where, name=name)
    if not 0.0 < out < 1.0:
        msg = f"{where}: {name} must lie in (0, 1), got {value!r}"
        raise ValueError(msg)
    return out


def nonnegative_or_per_group(value: Any, where: str, name: str) -> float | list[float]:
    """A number ≥ 0, or a list of them (one per parameter group, as PyTorch's ``min_lr``)."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [nonnegative(v, where, f"{name}[{i}]") for i, v in enumerate(value)]
    return nonnegative(value, where, name)


def one_of(*choices: str) -> Check:
    """A check that accepts exactly one of ``choices`` (strings)."""
    wanted = " or ".join(repr(c) for c in choices)

    def check(value: Any, where: str, name: str) -> str:
        if not isinstance(value, str) or value not in choices:
            msg = f"{where}: {name} must be {wanted}, got {value!r}"
            raise ValueError(msg)
        return value

    return check


def optional(check: Check) -> Check:
    """``check``, or None (for a default computed from other settings)."""

    def check_or_none(value: Any, where: str, name: str) -> Any:
        return None if value is None else check(value, where, name)

    return check_or_none
