"""Training state in and out as arrays: everything the next step depends on, as a flat mapping.

:func:`training_state` takes out of a model, its optimizer and its schedules all that determines
the next training step, as one flat ``dict`` of dotted names to arrays;
:func:`load_training_state` validates such a mapping against (fresh) objects and puts it back,
bit for bit, so that training continues exactly as an uninterrupted run would::

    from nnbackend.state import load_training_state, training_state

    state = training_state(model, opt, schedulers=[sched])    # host numbers, device arrays
    ...
    load_training_state(state, model2, opt2, schedulers=[sched2])

=================================  ===========================================================
key                                value
=================================  ===========================================================
``model/<name>``                   every ``model.state_dict()`` entry (parameters and
                                   persistent buffers), on the model's device
``rng/<module>.<attr>/counter``    the counter of each random stream (a
                                   :class:`~nnbackend.random.Generator` attribute of a module,
                                   e.g. ``rng/2.generator/counter`` for a Dropout)
``optim/param_groups/<g>/lr``      each parameter group's learning rate
``optim/param_groups/<g>/step``    the group's step count, when every parameter of the group
                                   has been stepped equally often (the usual case)
``optim/state/<i>/step``           otherwise the step count of each stepped parameter ``i``
                                   (the optimizer's order; a parameter never stepped has none)
``optim/state/<i>/<name>``         each state array of parameter ``i`` (``m``, ``v``,
                                   ``velocity``, ...), on the parameter's device
``sched/<k>/<field>``              the progress of the k-th schedule (``last_epoch``,
                                   ``base_lrs``, ``last_lrs``, ...; ``sched/<k>/after/...`` for
                                   a LinearWarmup's ``after``), NumPy arrays on the host
=================================  ===========================================================

Configuration is not state: the architecture, the hyperparameters other than ``lr``, and each
random stream's seed and stream number belong to the objects the state is loaded into (build
them as the originals were: ``nnbackend.layers.build(describe(model))``, the same optimizer
arguments), as a PyTorch state dict holds no layer sizes.

Per-step values: host numbers or device scalars
-----------------------------------------------
The values that change every step are the step counts, the learning rates (a schedule changes
them) and the random counters. Eager training keeps them as Python numbers: the fastest form,
with Adam's bias corrections computed on the host. A compiled step (``jax.jit`` of a pure
``step(state, batch) -> state``, a captured CUDA graph) needs them as inputs instead, or it
would freeze them as constants or recompile every step. With ``device_scalars=True`` they are
0-d arrays on the model's device: step counts int32, learning rates float64 where the device
has it (else float32; an update casts its factors once to the parameters' dtype), counters
int32. :func:`load_training_state` with ``device_scalars=True`` leaves them inside the model and
optimizer as such arrays, and every later step computes on them there (Adam's bias corrections
1 − βᵗ = −expm1(t ln β) included) without reading anything back; with ``device_scalars=False``
(the default) they become Python numbers again (reading device values once). A compiled step::

    def step(state, batch):                               # pure: state in, state out
        load_training_state(state, model, opt, device_scalars=True)
        y, backprop = model.forward(batch[0])
        loss, dy = loss_fn(y, batch[1])
        opt.zero_grad(); backprop(dy); opt.step()
        return training_state(model, opt, device_scalars=True), loss

    jitted = jax.jit(step)
    opt.step()  # (after one eager step, so that the optimizer state has its final keys)
    state = training_state(model, opt, device_scalars=True)
    for batch in data:
        state, loss = jitted(state, batch)               # traced once
    load_training_state(state, model, opt)               # the objects hold the result again

Both forms round-trip bit for bit, each into the same form. SGD and RMSprop take the same step
from a device learning rate as from a Python one (the learning rate is rounded once to the
parameters' dtype either way); Adam's device bias corrections agree with the host's to a few
ulp of float64 (float32 where the device has no float64: JAX without x64), not bit for bit.
Schedules run on the host once per epoch; their progress is always host NumPy arrays (leave the
``sched/`` keys out of what a compiled step takes). Checkpoints
(:mod:`nnbackend.checkpoint`) hold host copies: ``optimizer.state_dict()`` reads device step
counts and learning rates back as Python numbers.

``copy=True`` (the default) makes the arrays of :func:`training_state` copies, a snapshot that
later in-place steps do not change; ``copy=False`` gives the live arrays (cheaper; what a
compiled step returns anyway). :func:`load_training_state` always copies the arrays it takes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import array_api_compat
import numpy as np

from ._checks import describe_placement, name_mismatch, namespace_of
from ._typing import Array
from .backend import Backend, backend_of, dtype_name, to_numpy
from .layers.module import Module, Parameter
from .optim.optimizer import Optimizer
from .optim.schedulers import LinearWarmup, _Schedule
from .random import Generator

__all__ = ["load_training_state", "training_state"]

_INT32_MAX = (1 << 31) - 1
_COUNTER_LIMIT = 1 << 32


def training_state(
    model: Module,
    optimizer: Optimizer | None = None,
    *,
    schedulers: Sequence[Any] = (),
    device_scalars: bool = False,
    copy: bool = True,
) -> dict[str, Array]:
    """Everything the next training step depends on, as a flat ``{dotted name: array}``.

    Parameters
    ----------
    model : Module
        Its parameters, persistent buffers and random-stream counters are taken.
    optimizer : Optimizer, optional
        An optimizer over parameters of ``model``: its state arrays, step counts and each
        parameter group's learning rate.
    schedulers : sequence of schedules, optional
        Learning-rate schedules of ``optimizer``: their progress (host NumPy arrays).
    device_scalars : bool
        False: step counts, learning rates and counters as 0-d NumPy arrays on the host
        (int64, float64, int64; device values are read once). True: as 0-d arrays on the
        model's device (int32, float64 where the device has it else float32, int32), kept as
        they are when they already live there (nothing is read or copied).
    copy : bool
        Copy the model's and optimizer's arrays (a snapshot); False gives the live arrays.

    Returns
    -------
    dict of str to array
        Keys as in the module docstring, in a stable order (model, rng, optim, sched).

    Raises
    ------
    TypeError
        A module keeps host extra state that is not a random stream (it cannot travel as
        arrays), or the arguments are not a model, an optimizer and its schedules.
    ValueError
        The optimizer holds parameters that are not the model's, a schedule drives another
        optimizer, or ``device_scalars`` is asked of a model spread over several devices.
    """
    where = "training_state"
    _check_objects(model, optimizer, schedulers, where=where)
    target = _scalar_backend(model, where=where) if device_scalars else None
    out: dict[str, Array] = {}
    for name, value in model.state_dict().items():
        out[f"model/{name}"] = _copied(value) if copy else value
    for key, gen in _generators(model, where=where):
        out[f"rng/{key}/counter"] = _counter_out(gen, target)
    if optimizer is not None:
        out.update(_optimizer_out(optimizer, target, copy=copy))
    for k, sched in enumerate(schedulers):
        out.update(_schedule_out(sched, f"sched/{k}"))
    return out


def load_training_state(
    state: Mapping[str, Any],
    model: Module,
    optimizer: Optimizer | None = None,
    *,
    schedulers: Sequence[Any] = (),
    device_scalars: bool = False,
) -> None:
    """Put a :func:`training_state` mapping back into ``model``, ``optimizer`` and schedules.

    Everything is validated before anything changes: the keys (exactly those the objects
    need, each missing and unexpected one named), each array's shape and dtype against its
    parameter or buffer, the optimizer's state names for each parameter's group, step counts
    (integers ≥ 1), learning rates (≥ 0, or 0-d floating arrays), counters (in [0, 2³²), or
    0-d int32 arrays) and each schedule's progress. Arrays are copied onto each parameter's
    namespace and device, so a state taken on one backend loads on another.

    Parameters
    ----------
    state : mapping of str to array
        As :func:`training_state` returns (either form of per-step values).
    model, optimizer, schedulers
        The objects to restore, built as the ones the state was taken from.
    device_scalars : bool
        False: step counts, learning rates and counters become Python numbers (device values
        are read once). True: they become 0-d arrays on the model's device (values already
        there are kept, host values copied once), and later steps compute on them there.

    Raises
    ------
    KeyError
        Keys missing or unexpected (all of them named), or an optimizer state name the
        parameter's group does not have.
    ValueError, TypeError
        An entry of the wrong shape, dtype or range, named with its key; and the object
        errors of :func:`training_state`.
    """
    where = "load_training_state"
    if not isinstance(state, Mapping):
        msg = f"{where}: expected a mapping of names to arrays, got {type(state).__name__}"
        raise TypeError(msg)
    _check_objects(model, optimizer, schedulers, where=where)
    target = _scalar_backend(model, where=where) if device_scalars else None
    keys = [k for k in state if isinstance(k, str)]
    if len(keys) != len(state):
        bad = [k for k in state if not isinstance(k, str)]
        msg = f"{where}: keys must be strings, got {bad[:3]!r}"
        raise TypeError(msg)
    by_part: dict[str, dict[str, Any]] = {"model": {}, "rng": {}, "optim": {}, "sched": {}}
    stray = []
    for key in keys:
        part, _, rest = key.partition("/")
        if part in by_part and rest:
            by_part[part][rest] = state[key]
        else:
            stray.append(key)
    model_part = by_part["model"]
    names = model.state_dict().keys()
    gens = _generators(model, where=where)
    counter_keys = {f"{g}/counter" for g, _ in gens}
    missing = [f"model/{n}" for n in names if n not in model_part]
    missing += [f"rng/{k}" for k in counter_keys if k not in by_part["rng"]]
    unexpected = stray + [f"rng/{k}" for k in by_part["rng"] if k not in counter_keys]
    unexpected += [f"model/{n}" for n in model_part if n not in names]
    optim_plan = None
    if optimizer is None:
        unexpected += [f"optim/{k}" for k in by_part["optim"]]
    else:
        optim_plan = _OptimizerPlan(optimizer, by_part["optim"], target, where=where)
        missing += optim_plan.missing
        unexpected += optim_plan.unexpected
    sched_plans = [_SchedulePlan(s, f"sched/{k}") for k, s in enumerate(schedulers)]
    sched_keys = {key for plan in sched_plans for key in plan.keys}
    missing += sorted(sched_keys - {f"sched/{k}" for k in by_part["sched"]})
    unexpected += sorted({f"sched/{k}" for k in by_part["sched"]} - sched_keys)
    if missing or unexpected:
        msg = f"{where}: the state does not match the model, optimizer and schedules"
        raise KeyError(msg + name_mismatch(sorted(missing), sorted(unexpected)))

    model.check_state_dict(model_part, strict=True)
    counters = [(gen, _counter_in(by_part["rng"][f"{key}/counter"], target,
                                  what=f"{where}: rng/{key}/counter"))
                for key, gen in gens]
    if optim_plan is not None:
        optim_plan.check()
    sched_values = [plan.checked(state, where=where) for plan in sched_plans]

    # Everything is valid: change the objects. Schedules first (loading one sets the
    # optimizer's learning rates), then the learning rates the state holds.
    for plan, values in zip(sched_plans, sched_values, strict=True):
        plan.sched._restore(values)
    model.load_state_dict(model_part, strict=True)
    if optim_plan is not None:
        optim_plan.apply()
    for gen, counter in counters:
        gen.load_state_arrays({"counter": counter})


# -------------------------------------------------------------------------------------------
# The objects


def _check_objects(model: Any, optimizer: Any, schedulers: Any, *, where: str) -> None:
    if not isinstance(model, Module):
        msg = f"{where}: model must be a Module, got {type(model).__name__}"
        raise TypeError(msg)
    if optimizer is not None:
        if not isinstance(optimizer, Optimizer):
            msg = f"{where}: optimizer must be an Optimizer, got {type(optimizer).__name__}"
            raise TypeError(msg)
        own = {id(p) for p in model.parameters()}
        foreign = [i for i, p in enumerate(optimizer.params) if id(p) not in own]
        if foreign:
            p = optimizer.params[foreign[0]]
            msg = (
                f"{where}: {type(optimizer).__name__} holds {p!r} (params[{foreign[0]}]), which "
                "is not a parameter of the model"
            )
            raise ValueError(msg)
    if isinstance(schedulers, str | Mapping) or not isinstance(schedulers, Iterable):
        msg = f"{where}: schedulers must be a sequence of schedules, got {schedulers!r}"
        raise TypeError(msg)
    for k, sched in enumerate(schedulers):
        if not isinstance(sched, _Schedule):
            msg = f"{where}: schedulers[{k}] is a {type(sched).__name__}, not a schedule"
            raise TypeError(msg)
        if sched.optimizer is not optimizer:
            msg = f"{where}: schedulers[{k}] ({sched!r}) drives another optimizer than this one"
            raise ValueError(msg)


def _generators(model: Module, *, where: str) -> list[tuple[str, Generator]]:
    """``(<module>.<attribute>, generator)`` for each random stream a module holds, once each.

    A module whose class keeps other host extra state (it overrides ``get_extra_state``
    without holding a Generator) is refused: that state is host JSON, not arrays.
    """
    out: list[tuple[str, Generator]] = []
    seen: set[int] = set()
    for path, module in model.named_modules():
        own = [(attr, value) for attr, value in vars(module).items()
               if isinstance(value, Generator)]
        if not own and type(module).get_extra_state is not Module.get_extra_state:
            label = path or type(model).__name__
            msg = (
                f"{where}: {label} ({type(module).__name__}) keeps host extra state that is not "
                "a random stream; it cannot travel as arrays (save it with nnbackend.checkpoint)"
            )
            raise TypeError(msg)
        for attr, gen in own:
            if id(gen) not in seen:
                seen.add(id(gen))
                out.append((f"{path}.{attr}" if path else attr, gen))
    return out


def _reference_arrays(model: Module) -> Iterator[Array]:
    yield from (p.data for p in model.parameters())
    yield from model.buffers()


def _scalar_backend(model: Module, *, where: str) -> Backend:
    """The device the per-step scalars live on: the model's (one device, or an error)."""
    arrays = iter(_reference_arrays(model))
    ref = next(arrays, None)
    if ref is None:
        msg = f"{where}: device_scalars needs a model with parameters or buffers (a device)"
        raise ValueError(msg)
    be = backend_of(ref)
    for other in arrays:
        if backend_of(other) != be:
            msg = (
                f"{where}: device_scalars puts the per-step values on the model's device, but "
                f"the model's arrays are {describe_placement(ref)} and "
                f"{describe_placement(other)}"
            )
            raise ValueError(msg)
    return be


def _scalar_float(be: Backend) -> Any:
    """float64 where ``be``'s device has it (the Python path's precision), else float32."""
    try:
        info = be.xp.__array_namespace_info__()
        floats = info.dtypes(device=be.device, kind="real floating")
    except (AttributeError, TypeError, ValueError):
        floats = None
    if floats is None:
        try:
            return be.dtype("float64")
        except TypeError:
            return be.dtype("float32")
    return be.dtype("float64") if "float64" in floats else be.dtype("float32")


# -------------------------------------------------------------------------------------------
# Arrays and scalars


def _copied(value: Array) -> Array:
    return namespace_of(value).asarray(value, copy=True)


def _host_number(value: Any, *, what: str, integer: bool) -> Any:
    """A per-step value as a Python int or float (a device array is read once)."""
    if isinstance(value, bool):
        msg = f"{what} must be a number, got {value!r}"
        raise TypeError(msg)
    if isinstance(value, int | float | np.generic):
        host = np.asarray(value)
    elif array_api_compat.is_array_api_obj(value) or isinstance(value, np.ndarray):
        if tuple(value.shape) != ():
            msg = f"{what} must be a 0-d array, got shape {tuple(value.shape)}"
            raise ValueError(msg)
        host = np.asarray(to_numpy(value))
    else:
        msg = f"{what} must be a number or a 0-d array, got {type(value).__name__}"
        raise TypeError(msg)
    if integer:
        if host.dtype.kind not in "iu":
            msg = f"{what} must be an integer, got dtype {host.dtype}"
            raise TypeError(msg)
        return int(host)
    if host.dtype.kind not in "iuf":
        msg = f"{what} must be a real number, got dtype {host.dtype}"
        raise TypeError(msg)
    return float(host)


def _device_scalar(value: Any, be: Backend, *, what: str, kind: str, dtype: Any) -> Array | None:
    """``value`` kept as it is when it is a 0-d array of ``kind`` on ``be``, unread; None for
    anything else, and for NumPy arrays, whose values are checked on the host (free there)."""
    if isinstance(value, np.ndarray) or not be.holds(value):
        return None
    if tuple(value.shape) != ():
        msg = f"{what} must be a 0-d array, got shape {tuple(value.shape)}"
        raise ValueError(msg)
    if not be.xp.isdtype(value.dtype, kind) or (dtype is not None and value.dtype != dtype):
        wanted = dtype_name(dtype) if dtype is not None else kind
        msg = f"{what} must be a 0-d {wanted} array, got dtype {dtype_name(value.dtype)}"
        raise TypeError(msg)
    return value


def _on_device(host: Any, be: Backend, dtype: Any) -> Array:
    """A host number as a 0-d array of ``dtype`` on ``be`` (cast on the host, copied once)."""
    return be.asarray(np.asarray(host, dtype=dtype_name(dtype)), copy=True)


def _counter_out(gen: Generator, target: Backend | None) -> Array:
    counter = gen.counter
    if target is None:
        return np.asarray(gen.state()["counter"], dtype=np.int64)
    if not isinstance(counter, int) and target.holds(counter):
        return counter
    return _on_device(_as_int32(gen.state()["counter"]), target, target.xp.int32)


def _counter_in(value: Any, target: Backend | None, *, what: str) -> Any:
    """A checked counter: a Python int in [0, 2³²), or a 0-d int32 array on ``target``."""
    if target is not None:
        kept = _device_scalar(value, target, what=what, kind="integral", dtype=target.xp.int32)
        if kept is not None:
            return kept
    number = _host_number(value, what=what, integer=True)
    if not 0 <= number < _COUNTER_LIMIT:
        msg = f"{what} must be in [0, 2**32), got {number}"
        raise ValueError(msg)
    if target is None:
        return number
    return _on_device(_as_int32(number), target, target.xp.int32)


def _as_int32(counter: int) -> int:
    """The int32 holding a counter's 32 bits (the form of a device counter)."""
    return counter - (1 << 32) if counter > _INT32_MAX else counter


# -------------------------------------------------------------------------------------------
# The optimizer


def _group_ranges(optimizer: Optimizer) -> list[range]:
    out, start = [], 0
    for group in optimizer.param_groups:
        out.append(range(start, start + len(group.params)))
        start += len(group.params)
    return out


def _one_count(counts: Sequence[Any]) -> bool:
    """Whether these step counts are one: equal ints, or one 0-d array (never read)."""
    first = counts[0]
    if isinstance(first, int):
        return all(isinstance(c, int) and c == first for c in counts)
    return all(c is first for c in counts)


class _Scalars:
    """Per-step values converted for export, each distinct value or array once (parameters that
    shared a count share the exported array)."""

    def __init__(self, target: Backend | None) -> None:
        self.target = target
        self._done: dict[tuple[int, str, int], tuple[Any, Array]] = {}  # per parameter group

    def step(self, count: Any, group: int) -> Array:
        key = (group, "int", count) if isinstance(count, int) else (group, "id", id(count))
        hit = self._done.get(key)
        if hit is not None:
            return hit[1]
        target = self.target
        if target is None:
            value = count if isinstance(count, int) else int(to_numpy(count))
            out = np.asarray(value, dtype=np.int64)
        elif not isinstance(count, int) and target.holds(count):
            out = count
        else:
            value = count if isinstance(count, int) else int(to_numpy(count))
            if value > _INT32_MAX:
                msg = f"training_state: a step count of {value} does not fit a device int32"
                raise OverflowError(msg)
            out = _on_device(value, target, target.xp.int32)
        self._done[key] = (count, out)  # the count kept alive: its id stays its own
        return out

    def lr(self, lr: Any) -> Array:
        target = self.target
        if target is None:
            return np.asarray(lr if isinstance(lr, float) else float(to_numpy(lr)),
                              dtype=np.float64)
        if not isinstance(lr, int | float) and target.holds(lr):
            return lr
        value = lr if isinstance(lr, int | float) else float(to_numpy(lr))
        return _on_device(value, target, _scalar_float(target))


def _optimizer_out(optimizer: Optimizer, target: Backend | None, *,
                   copy: bool) -> dict[str, Array]:
    out: dict[str, Array] = {}
    scalars = _Scalars(target)
    for g, (group, indices) in enumerate(zip(optimizer.param_groups, _group_ranges(optimizer),
                                             strict=True)):
        out[f"optim/param_groups/{g}/lr"] = scalars.lr(group.settings["lr"])
        counts = [optimizer.state[i].get("step") for i in indices]
        if counts and all(c is not None for c in counts) and _one_count(counts):
            out[f"optim/param_groups/{g}/step"] = scalars.step(counts[0], g)
            counts = []
        for i, count in zip(indices, counts, strict=False):
            if count is not None:
                out[f"optim/state/{i}/step"] = scalars.step(count, g)
    for i, st in enumerate(optimizer.state):
        for name, value in st.items():
            if name != "step":
                out[f"optim/state/{i}/{name}"] = _copied(value) if copy else value
    return out


class _OptimizerPlan:
    """The ``optim/`` part of a state checked against an optimizer, then applied."""

    def __init__(self, optimizer: Optimizer, part: Mapping[str, Any], target: Backend | None,
                 *, where: str) -> None:
        self.optimizer, self.part, self.target, self.where = optimizer, part, target, where
        self.missing: list[str] = []
        self.unexpected: list[str] = []
        n = len(optimizer.params)
        groups = len(optimizer.param_groups)
        known = {"step", *optimizer._state_names}
        self.group_steps: dict[int, Any] = {}
        self.entries: dict[int, dict[str, Any]] = {}
        for key, value in part.items():
            fields = key.split("/")
            if len(fields) == 3 and fields[0] == "param_groups" and _index(fields[1], groups):
                g = int(fields[1])
                if fields[2] == "step":
                    self.group_steps[g] = value
                    continue
                if fields[2] == "lr":
                    continue
            elif (len(fields) == 3 and fields[0] == "state" and _index(fields[1], n)
                  and fields[2] in known):
                self.entries.setdefault(int(fields[1]), {})[fields[2]] = value
                continue
            self.unexpected.append(f"optim/{key}")
        self.missing = [f"optim/param_groups/{g}/lr" for g in range(groups)
                        if f"param_groups/{g}/lr" not in part]
        self.ranges = _group_ranges(optimizer)
        for g, indices in enumerate(self.ranges):
            if g not in self.group_steps:
                continue
            # a group's count and a parameter's own: one too many
            self.unexpected += [f"optim/state/{i}/step" for i in indices
                                if "step" in self.entries.get(i, {})]

    def check(self) -> None:
        """Validate steps, learning rates and state arrays; keep the converted values."""
        opt, where = self.optimizer, self.where
        self.lrs = [self._lr(g) for g in range(len(opt.param_groups))]
        steps: dict[Any, Any] = {}  # one converted count per given value (or array)
        self.states: list[dict[str, Any]] = []
        for g, indices in enumerate(self.ranges):
            settings = opt.param_groups[g].settings
            expected = opt._expected_state(settings)
            for i in indices:
                entry = dict(self.entries.get(i, {}))
                label = f"optim/state/{i}"
                if g in self.group_steps:
                    entry["step"] = self.group_steps[g]
                    step_label = f"{where}: optim/param_groups/{g}/step"
                else:
                    step_label = f"{where}: {label}/step"
                if not entry:
                    self.states.append({})
                    continue
                p = opt.params[i]
                if "step" not in entry:
                    msg = f"{where}: {label} holds state arrays of {p!r} but no step count"
                    raise KeyError(msg + name_mismatch([f"{label}/step"], []))
                lacking = sorted(set(expected) - entry.keys())
                if lacking:
                    msg = (
                        f"{where}: {label} ({p!r}) lacks state that "
                        f"{type(opt).__name__}'s param_groups[{g}] needs"
                    )
                    raise KeyError(msg + name_mismatch([f"{label}/{n}" for n in lacking], []))
                out = {"step": self._step(entry["step"], steps, what=step_label, group=g)}
                for name, value in entry.items():
                    if name != "step":
                        out[name] = _state_array(value, p, what=f"{where}: {label}/{name}")
                self.states.append(out)

    def _lr(self, g: int) -> Any:
        value = self.part[f"param_groups/{g}/lr"]
        what = f"{self.where}: optim/param_groups/{g}/lr"
        if self.target is not None:
            kept = _device_scalar(value, self.target, what=what, kind="real floating",
                                  dtype=None)
            if kept is not None:
                return kept
        number = _host_number(value, what=what, integer=False)
        opt = self.optimizer
        spec = {h.name: h for h in opt.HYPERPARAMETERS}["lr"]
        checked = spec.check(number, f"{self.where}: {type(opt).__name__} param_groups[{g}]",
                             "lr")
        if self.target is None:
            return checked
        return _on_device(checked, self.target, _scalar_float(self.target))

    def _step(self, value: Any, done: dict[Any, Any], *, what: str, group: int) -> Any:
        target = self.target
        if target is not None:
            kept = _device_scalar(value, target, what=what, kind="integral", dtype=None)
            if kept is not None:
                return kept
        number = _host_number(value, what=what, integer=True)
        if number < 1:
            msg = f"{what} must be a positive integer, got {number}"
            raise ValueError(msg)
        if target is None:
            return number
        if number > _INT32_MAX:
            msg = f"{what}: a step count of {number} does not fit a device int32"
            raise OverflowError(msg)
        key = (group, number)  # equal counts of a group become one shared array
        if key not in done:
            done[key] = _on_device(number, target, target.xp.int32)
        return done[key]

    def apply(self) -> None:
        opt = self.optimizer
        for group, lr in zip(opt.param_groups, self.lrs, strict=True):
            group.settings["lr"] = lr
        opt.state = [
            {name: value if name == "step" else _onto(value, p.data)
             for name, value in entry.items()}
            for p, entry in zip(opt.params, self.states, strict=True)
        ]


def _index(text: str, n: int) -> bool:
    return text.isdigit() and str(int(text)) == text and int(text) < n


def _state_array(value: Any, p: Parameter, *, what: str) -> Any:
    shape = tuple(getattr(value, "shape", ()))
    if not hasattr(value, "dtype") or shape != p.shape:
        msg = f"{what} has shape {shape}, the parameter {p!r} has {p.shape}"
        raise ValueError(msg)
    got, want = dtype_name(value.dtype), dtype_name(p.dtype)
    if got != want:
        msg = f"{what} has dtype {got}, the parameter {p!r} has {want}"
        raise TypeError(msg)
    return value


def _onto(value: Any, ref: Array) -> Array:
    """A copy of ``value`` on ``ref``'s namespace and device."""
    be = backend_of(ref)
    if be.holds(value):
        return be.xp.asarray(value, copy=True)
    return be.asarray(value, copy=True)


# -------------------------------------------------------------------------------------------
# Schedules


def _encode(value: Any) -> np.ndarray:
    if isinstance(value, bool):
        msg = f"training_state: a schedule's progress holds a bool ({value!r})"
        raise TypeError(msg)
    if isinstance(value, int):
        return np.asarray(value, dtype=np.int64)
    if isinstance(value, float):
        return np.asarray(value, dtype=np.float64)
    return np.asarray([float(v) for v in value], dtype=np.float64)


def _schedule_out(sched: Any, prefix: str) -> dict[str, Array]:
    out: dict[str, Array] = {}
    for field in type(sched).PROGRESS:
        out[f"{prefix}/{field.name}"] = _encode(getattr(sched, field.name))
    if isinstance(sched, LinearWarmup) and sched.after is not None:
        out.update(_schedule_out(sched.after, f"{prefix}/after"))
    return out


class _SchedulePlan:
    """The keys a schedule's progress takes, and their check against a state."""

    def __init__(self, sched: Any, prefix: str) -> None:
        self.sched, self.prefix = sched, prefix
        self.keys = set(_schedule_out(sched, prefix))

    def checked(self, state: Mapping[str, Any], *, where: str) -> dict[str, Any]:
        """The progress, validated by the schedule itself (as its ``load_state_dict`` does)."""
        raw = _saved_progress(self.sched, self.prefix, state, where=where)
        return dict(self.sched._validated(raw))


def _saved_progress(sched: Any, prefix: str, state: Mapping[str, Any], *,
                    where: str) -> dict[str, Any]:
    """The state dict ``sched.state_dict()`` would give for the progress under ``prefix``."""
    saved: dict[str, Any] = {"type": type(sched).__name__, "config": {}}
    for field in type(sched).PROGRESS:
        key = f"{prefix}/{field.name}"
        host = np.asarray(to_numpy(state[key]))
        if field.per_group:
            if host.ndim != 1:
                msg = f"{where}: {key} must be a 1-d array (one value per parameter group)"
                raise ValueError(msg)
            saved[field.name] = [float(v) for v in host]
        elif host.shape != ():
            msg = f"{where}: {key} must be a 0-d array, got shape {host.shape}"
            raise ValueError(msg)
        elif isinstance(getattr(sched, field.name), int):
            if host.dtype.kind not in "iu":
                msg = f"{where}: {key} must be an integer, got dtype {host.dtype}"
                raise TypeError(msg)
            saved[field.name] = int(host)
        else:
            saved[field.name] = float(host)
    if isinstance(sched, LinearWarmup):
        after = sched.after
        saved["after"] = None if after is None else _saved_progress(
            after, f"{prefix}/after", state, where=where)
    return saved
