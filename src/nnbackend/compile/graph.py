"""CUDA graphs of a whole training step: captured once per batch shape, replayed per batch.

:class:`GraphStep` records one training step (forward, loss, zero_grad, backward, optional
gradient clipping, optimizer step) as a CUDA graph and replays it for every later batch: one
graph launch instead of the step's forty-odd kernel launches and their Python dispatch. It runs
on CuPy (stream capture into a ``cupy.cuda.Graph``) and on PyTorch CUDA tensors
(``torch.cuda.CUDAGraph``)::

    step = GraphStep(model, nb.CrossEntropyLoss(), opt)
    for x, y in batches:              # arrays on the model's device
        loss = step(x, y)             # a fresh 0-d device array
    step.write_back()                 # Python learning rates again (see below)

.. warning:: The CUDA engines (:class:`CuPyGraphEngine`, :class:`TorchGraphEngine`) have not
   yet run on a GPU: they run where ``ci/gpu.sh`` runs the test suite on a CUDA machine (the
   CuPy and PyTorch CUDA rows of the backend matrix) and are unverified until it has. The logic
   around them (static buffers, device scalars, warm-up, one graph per shape, no host read in a
   replayed step) is tested on the CPU through :class:`ReplayDouble`, and their calls to CuPy
   and PyTorch against fakes of both.

What a graph needs, and how the step gives it
---------------------------------------------
A replay runs the captured kernels on the memory addresses of capture time; nothing in Python
runs. So:

* **Inputs in static buffers.** Each batch shape gets its own ``x``/``y`` buffers, allocated
  once; a call copies the batch in (``x_static[...] = x``, one device copy each) and replays.
* **Per-step values in device memory, updated in place.** Step counts, learning rates (and with
  them Adam's bias corrections) and random-stream counters are 0-d arrays on the model's device
  (:func:`nnbackend.state.training_state` with ``device_scalars=True``). The update rules
  produce a *new* array for the next count (``t + 1``); the captured step copies it back into
  the array the kernels read (a device copy inside the graph), so the next replay reads the new
  count. Parameters, gradients, optimizer state and running statistics are updated in place on
  these backends (arena views), so they need nothing.
* **The learning rate picked up every call.** A schedule that sets ``group["lr"] = 0.01``
  between calls has its value written into the learning rate's device scalar in place (one tiny
  host-to-device copy, at the edge of the step) and the group given the scalar back: no
  recapture, the graph reads the new rate. Any other per-step value an eager use of the objects
  replaced (an eager step, a counter loaded on the host) is copied in the same way.
* **Other settings are constants of the graph.** A parameter group's momentum, weight decay,
  betas, eps (every setting but ``lr``) are Python values the kernels are launched with, so a
  graph replays the values of its capture. They are recorded at capture; a call that finds one
  changed (``group["momentum"] = 0.5``) drops the graphs, and each shape is captured once again
  at its next call. :class:`ReplayDouble`, which reruns the step's Python and so would follow
  the new value silently, asserts instead that no replay runs on settings changed since its
  capture.
* **No host synchronisation inside the step** (the library's step never reads a device value;
  :class:`ReplayDouble` asserts zero host reads per replay on the GPU-like test device).
* **Memory only from the graph's own pool during capture.** PyTorch gives each graph a private
  pool. CuPy captures with a dedicated :class:`cupy.cuda.MemoryPool` as the allocator (on a
  capture stream of its own), so that blocks the captured kernels use are never handed to an
  allocation outside the graphs after capture; the pool lives as long as the step.

The result equals the eager step's
----------------------------------
Before a shape is captured the step runs once eagerly on its static buffers (the *warm-up*:
CUDA graphs need the memory pool's blocks allocated, kernels compiled and library handles made
before capture, as PyTorch's documentation prescribes). To leave the training result unchanged,
the warm-up runs on a snapshot: every array of the training state is copied first and copied
back into place after the warm-up (and again after the capture, which a CUDA engine does not
execute but the replay double does). Then the graph is replayed for the call's batch: that
replay is the step. The arithmetic is the eager step's own, the same operations in the same
order on the same arrays (only the copies of the per-step values are added), so a replayed step
equals an eager step taken with device per-step values bit for bit; with Python per-step values
the eager step computes Adam's bias corrections on the host instead, a few ulp apart (SGD and
RMSprop: the same bits, see :mod:`nnbackend.state`).

When the training state is not yet complete (a fresh optimizer has no moments or step counts
until its first step) or the warm-up changed which arrays the objects hold (after a load, an
optimizer adopts its state into flat buffers on the next step), the warm-up is kept as the
call's real step (it ran on this batch) and capture waits for the next call of that shape: a
fresh optimizer's first step is eager. A state that never settles is refused after a few calls,
naming the entries that keep changing.

Batch shapes
------------
A graph is captured per batch shape (and dtype, and training mode): the last, partial batch of
an epoch gets a second graph, captured once and replayed every epoch (its warm-up and capture
cost once what an eager step costs per epoch, and its replays keep the per-call cost and the
host-read-free step of the others). Beyond ``max_graphs`` shapes (variable-length batches)
further shapes run the eager step on the same device state, logged once.

Python-side bookkeeping of the step (``optimizer.path_stats``, warnings issued once) runs when
the step's Python runs: under a CUDA engine in warm-ups, captures and eager steps only, not in
replays (the replay double runs it every time).

The loss and the state between calls
------------------------------------
A call returns a copy of the graph's static loss buffer (one device-side copy): it stays valid
after later calls, so a caller may keep a window of losses (as ``fit`` does) before reading
them. With ``return_outputs=True`` the model's output is kept in a static buffer of each shape
beside the loss's and copied out the same way. The model and optimizer hold the graph's arrays
at every moment between calls (the kernels update them in place), so ``checkpoint.save``,
``predict`` or an eager step may use the objects at any time; an eager step (or a
``load_state_dict``) between calls is picked up by the next call. Between calls the learning
rates are 0-d device arrays, which schedules refuse: :meth:`GraphStep.write_back` copies no
array but puts each group's ``lr`` back as a Python float (one host read per group), and the
next call copies it into the device scalar again. :meth:`GraphStep.reload` copies the objects'
values into the captured arrays again (no recapture), or drops the graphs when the state's
structure changed.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .._checks import describe_placement
from .._typing import Array
from ..backend import Backend, dtype_name, supports_views
from ..layers.module import Module
from ..optim.clip import clip_grad_norm as _clip_grad_norm
from ..optim.optimizer import Optimizer
from ..random import Generator
from ..state import _INT32_MAX, _generators, _group_ranges, _scalar_backend, training_state
from .base import check_arguments

__all__ = [
    "CuPyGraphEngine",
    "GraphEngine",
    "GraphStep",
    "ReplayDouble",
    "TorchGraphEngine",
    "UnsteadyStateError",
]

_log = logging.getLogger(__name__)
_SETTLE_LIMIT = 3  # eager steps in a row that may still change the state's structure
Probe = Callable[[], list[tuple[str, Array]]]
Constants = Callable[[], dict[str, Any]]


class UnsteadyStateError(RuntimeError):
    """The training step keeps replacing arrays of the state, so no graph can be captured."""


# -------------------------------------------------------------------------------------------
# Engines: how a step is warmed up, captured and replayed


class GraphEngine(ABC):
    """Capture and replay of a step function ``fn() -> None`` that works on fixed arrays.

    ``warmup(fn)`` runs it eagerly where the capture will run (its stream and memory pool);
    ``capture(fn, probe, constants)`` records it and returns a handle (a CUDA engine does not
    execute the work; a test double may: the caller restores the state after capture either
    way); ``replay(handle)`` runs the recorded work on the arrays of capture time. ``probe()``
    lists the arrays the recording relies on (static buffers and every training-state array, by
    name); ``constants()`` the Python values the recording holds as constants (the optimizer's
    settings other than the learning rates, by name): a real graph ignores both, the replay
    double checks them.
    """

    name: str = "engine"

    @abstractmethod
    def warmup(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` eagerly as the capture will (its stream, its allocator)."""

    @abstractmethod
    def capture(self, fn: Callable[[], None], probe: Probe,
                constants: Constants | None = None) -> Any:
        """Record ``fn``; return a handle for :meth:`replay`."""

    @abstractmethod
    def replay(self, handle: Any) -> None:
        """Run the work recorded in ``handle`` once, ordered after the caller's earlier work."""

    @contextmanager
    def eager(self) -> Iterator[None]:
        """Where eager work of the step (copies, an eager step) runs: the caller's stream."""
        yield


@dataclass(eq=False)
class _Recording:
    fn: Callable[[], None]
    probe: Probe
    arrays: list[tuple[str, int]]  # (name, id) of what the recording relies on
    constants: Constants | None = None
    values: dict[str, Any] = field(default_factory=dict)  # the constants at capture


@dataclass(eq=False)
class ReplayDouble(GraphEngine):
    """A CPU stand-in for a CUDA graph engine, for testing :class:`GraphStep`'s logic.

    ``capture`` runs the step function and records it together with the identity of every
    array it relies on (the static buffers and the training state's arrays, from ``probe``);
    ``replay`` runs the recorded function again, as a graph replays its kernels, and checks
    what a real graph would silently get wrong:

    * the objects still hold exactly the arrays of capture time, before and after the replay
      (a rebound array, or a per-step value left as a Python number, would be frozen into a
      real graph: AssertionError naming the entry);
    * the constants of capture time (``constants()``: the optimizer's settings other than the
      learning rates) are unchanged before the replay (a real graph replays the values it was
      captured with whatever the settings say now, so a changed setting needs a new capture:
      AssertionError naming the setting, its value at capture and now);
    * the replayed step reads nothing back to the host (counted with
      :func:`nnbackend.testing.count_host_reads`, which sees the GPU-like test device's reads;
      AssertionError listing them).

    Attributes
    ----------
    captures, replays, warmups : int
        How often each ran.
    host_reads : list of int
        The host reads of each replay (all zero, or the replay raised).
    """

    name: str = "replay-double"
    captures: int = 0
    replays: int = 0
    warmups: int = 0
    host_reads: list[int] = field(default_factory=list)

    def warmup(self, fn: Callable[[], None]) -> None:
        self.warmups += 1
        fn()

    def capture(self, fn: Callable[[], None], probe: Probe,
                constants: Constants | None = None) -> _Recording:
        before = [(name, id(a)) for name, a in probe()]
        values = dict(constants()) if constants is not None else {}
        fn()
        self._check(before, probe, when="after capture")
        self.captures += 1
        return _Recording(fn, probe, before, constants, values)

    def replay(self, handle: Any) -> None:
        if not isinstance(handle, _Recording):
            msg = f"ReplayDouble.replay: expected a handle from capture(), got {handle!r}"
            raise TypeError(msg)
        from ..testing import count_host_reads

        self._check(handle.arrays, handle.probe, when="before a replay")
        self._check_constants(handle)
        with count_host_reads() as reads:
            handle.fn()
        self.host_reads.append(reads.count)
        if reads.count:
            msg = (f"ReplayDouble: a replayed step read device values on the host {reads!r}; "
                   "a CUDA graph cannot contain a synchronisation")
            raise AssertionError(msg)
        self._check(handle.arrays, handle.probe, when="after a replay")
        self.replays += 1

    @staticmethod
    def _check_constants(handle: _Recording) -> None:
        if handle.constants is None:
            return
        now = handle.constants()
        if now == handle.values:
            return
        was = handle.values
        changed = [f"{n}: {was.get(n)!r} at capture, {now.get(n)!r} now"
                   for n in sorted(was.keys() | now.keys()) if was.get(n) != now.get(n)]
        msg = (f"ReplayDouble: before a replay, settings the graph holds as constants changed "
               f"since capture ({'; '.join(changed[:8])}): a CUDA graph would replay the "
               "values of capture time; the step must capture again")
        raise AssertionError(msg)

    @staticmethod
    def _check(recorded: list[tuple[str, int]], probe: Probe, *, when: str) -> None:
        now = [(name, id(a)) for name, a in probe()]
        if now == recorded:
            return
        names = dict(recorded)
        current = dict(now)
        changed = sorted(n for n in names.keys() | current.keys()
                         if names.get(n) != current.get(n))
        msg = (f"ReplayDouble: {when}, the step works on other arrays than at capture for "
               f"{changed[:8]}: a CUDA graph would read and write the arrays of capture time")
        raise AssertionError(msg)


class CuPyGraphEngine(GraphEngine):
    """CUDA graphs on CuPy: stream capture into a ``cupy.cuda.Graph``.

    Warm-up and capture run on one non-blocking stream of the engine's own, with a dedicated
    ``cupy.cuda.MemoryPool`` as the allocator (CuPy's pool is per stream: blocks the warm-up
    freed are reused by the capture without a ``cudaMalloc``; the capture mode is CuPy's
    default, relaxed, where a pool that must still grow may call it). Blocks of that pool are
    never handed to allocations outside warm-ups and captures, so no array of the program can
    land where a replay writes; the pool is never trimmed while the engine lives. Replays are
    launched on the caller's current stream; warm-up and capture wait for it with events and
    make it wait for them.

    Unverified until ``ci/gpu.sh`` has run it on a CUDA machine.
    """

    name = "cupy"

    def __init__(self) -> None:
        import cupy

        self._cupy: Any = cupy
        self.pool: Any = self._cupy.cuda.MemoryPool()
        self.stream: Any = self._cupy.cuda.Stream(non_blocking=True)

    @contextmanager
    def _on_capture_stream(self) -> Iterator[None]:
        cuda = self._cupy.cuda
        caller = cuda.get_current_stream()
        self.stream.wait_event(caller.record())
        with self.stream, cuda.using_allocator(self.pool.malloc):
            yield
        caller.wait_event(self.stream.record())

    def warmup(self, fn: Callable[[], None]) -> None:
        with self._on_capture_stream():
            fn()

    def capture(self, fn: Callable[[], None], probe: Probe,
                constants: Constants | None = None) -> Any:
        with self._on_capture_stream():
            self.stream.begin_capture()
            try:
                fn()
            finally:  # leave capture mode even when the step raised (its graph is dropped)
                graph = self.stream.end_capture()
        return graph

    def replay(self, handle: Any) -> None:
        handle.launch(stream=self._cupy.cuda.get_current_stream())


class TorchGraphEngine(GraphEngine):
    """CUDA graphs on PyTorch CUDA tensors: ``torch.cuda.CUDAGraph`` and ``torch.cuda.graph``.

    Warm-up and capture run on one side stream of the engine's own (PyTorch's whole-network
    recipe: the side stream waits for the current one, the current one for it afterwards; one
    stream for both, so that library handles made lazily during the warm-up serve the capture).
    Each graph allocates from its own private pool (PyTorch's default), which no allocation
    outside that graph's capture uses while the graph lives. Replays run on the current stream.

    Unverified until ``ci/gpu.sh`` has run it on a CUDA machine.
    """

    name = "torch-cuda"

    def __init__(self, device: Any) -> None:
        import torch

        self._torch: Any = torch
        self.stream: Any = self._torch.cuda.Stream(device=device)

    def warmup(self, fn: Callable[[], None]) -> None:
        cuda = self._torch.cuda
        self.stream.wait_stream(cuda.current_stream())
        with cuda.stream(self.stream):
            fn()
        cuda.current_stream().wait_stream(self.stream)

    def capture(self, fn: Callable[[], None], probe: Probe,
                constants: Constants | None = None) -> Any:
        cuda = self._torch.cuda
        graph = cuda.CUDAGraph()
        self.stream.wait_stream(cuda.current_stream())
        with cuda.graph(graph, stream=self.stream):
            fn()
        cuda.current_stream().wait_stream(self.stream)
        return graph

    def replay(self, handle: Any) -> None:
        handle.replay()


def _engine_for(engine: Any, be: Backend, *, where: str) -> GraphEngine:
    if isinstance(engine, GraphEngine):
        return engine
    if engine == "double":
        return ReplayDouble()
    if engine != "auto":
        msg = f"{where}: engine must be 'auto', 'double' or a GraphEngine, got {engine!r}"
        raise ValueError(msg)
    if be.name == "cupy":
        return CuPyGraphEngine()
    if be.name == "torch" and getattr(be.device, "type", None) == "cuda":
        return TorchGraphEngine(be.device)
    msg = (
        f"{where}: CUDA graphs need a CUDA device: CuPy, or PyTorch on a CUDA device; the model "
        f"is on {be!r}. Use compile_step (which takes the eager step there), or "
        "engine='double' to replay on the CPU for testing"
    )
    raise ValueError(msg)


# -------------------------------------------------------------------------------------------
# The step


@dataclass(eq=False)
class _Shape:
    """What one batch shape owns: its static buffers, its loss buffer and its graph."""

    x: Array
    y: Array
    fn: Callable[[], None]
    loss: list[Array]  # the static loss buffer (and output buffer) once the warm-up made them
    handle: Any = None


def _is_per_step(key: str) -> bool:
    """Step counts, learning rates and random counters: the values rebound every step."""
    if key.startswith("rng/"):
        return True
    return key.startswith("optim/") and (key.endswith("/lr") or key.endswith("/step"))


class GraphStep:
    """A training step captured as a CUDA graph per batch shape and replayed per batch.

    ``step(x, y)`` does what the eager step does (forward, loss, zero_grad, backward, optional
    clipping, optimizer step) and returns the loss as a fresh 0-d device array. See the module
    docstring for what is captured, how the warm-up keeps the result equal to the eager step's,
    and how partial batches, learning-rate changes and the state between calls are handled.
    A learning rate set between calls is read by the graphs without recapture; any other
    setting of a parameter group (momentum, weight decay, betas, eps, ...) is a constant of the
    captured graphs, so changing it makes the next call of each shape capture again.

    Parameters
    ----------
    model : Module
        On CuPy or on PyTorch CUDA (or, with the replay double, any backend with mutable
        arrays: NumPy, the GPU-like test device, PyTorch CPU). Its per-step values (the
        optimizer's step counts and learning rates, the random counters) are made 0-d device
        arrays here, as ``load_training_state(..., device_scalars=True)`` makes them.
    loss_fn : callable
        ``loss_fn(y, target) -> (loss, dy)``, as :class:`nnbackend.CrossEntropyLoss`.
    optimizer : Optimizer
        Over ``model``'s parameters (no others: checked as for every compiled step).
    clip_grad_norm : float, optional
        Clip the gradients' global norm to this bound before each update.
    engine : {"auto", "double"} or GraphEngine
        "auto": :class:`CuPyGraphEngine` on CuPy, :class:`TorchGraphEngine` on PyTorch CUDA
        (an error elsewhere); "double": :class:`ReplayDouble` (tests on the CPU).
    max_graphs : int
        Batch shapes that get a graph; further shapes take the eager step.
    return_outputs : bool
        ``step(x, y)`` returns ``(loss, output)``: the model's output on the batch too, kept
        in a static buffer of the graph beside the loss's and copied out like it.

    Attributes
    ----------
    kind : str
        ``"cuda-graph"``.
    traces : int
        Graphs captured so far (one per batch shape).
    compile_seconds : float
        Host time spent in warm-ups and captures.
    eager_steps : int
        Calls that ran the eager step (a fresh optimizer's first step; shapes beyond
        ``max_graphs``).
    note : str
        What runs, for ``fit`` and the command line to print.
    engine : GraphEngine

    Raises
    ------
    TypeError
        Not a Module, a callable loss and an Optimizer.
    ValueError
        The optimizer holds a parameter that is not the model's, ``clip_grad_norm`` is
        negative, the model is data-parallel, the model's arrays are immutable (JAX,
        array-api-strict: a graph replays kernels that write fixed memory in place), or
        ``engine="auto"`` without a CUDA device.

    Notes
    -----
    The CUDA engines are unverified until ``ci/gpu.sh`` has run them on a CUDA machine.
    """

    kind = "cuda-graph"

    def __init__(self, model: Module, loss_fn: Callable[[Array, Array], tuple[Array, Array]],
                 optimizer: Optimizer, *, clip_grad_norm: float | None = None,
                 engine: Any = "auto", max_graphs: int = 4,
                 return_outputs: bool = False) -> None:
        where = "GraphStep"
        clip_grad_norm = check_arguments(model, loss_fn, optimizer, clip_grad_norm, where=where)
        if isinstance(max_graphs, bool) or not isinstance(max_graphs, int) or max_graphs < 1:
            msg = f"{where}: max_graphs must be a positive int, got {max_graphs!r}"
            raise ValueError(msg)
        be = _scalar_backend(model, where=where)
        if not supports_views(be.xp):
            msg = (
                f"{where}: the model's arrays ({be.name}) are immutable, and a CUDA graph "
                "replays kernels that update fixed memory in place; use compile_step (jax.jit "
                "on JAX) or the eager step"
            )
            raise ValueError(msg)
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.clip_grad_norm = clip_grad_norm
        self.backend = be
        self.engine = _engine_for(engine, be, where=where)
        self.max_graphs = max_graphs
        self.return_outputs = bool(return_outputs)
        self.traces = 0
        self.compile_seconds = 0.0
        self.eager_steps = 0
        self.note = (
            f"cuda-graph ({self.engine.name}): the training step captured once per batch shape "
            "and replayed per batch on static input buffers, per-step values in device memory"
        )
        if isinstance(self.engine, ReplayDouble):
            self.note += " (CPU replay double: for tests, nothing runs faster)"
        self._where = where
        self._generators: dict[str, Generator] = {
            f"rng/{key}/counter": gen for key, gen in _generators(model, where=where)}
        self._shapes: dict[tuple[Any, ...], _Shape] = {}
        self._arrays: dict[str, Array] | None = None  # the state the graphs work on
        self._constants: dict[str, Any] | None = None  # the settings the graphs hold
        self._unsettled = 0
        self._logged_eager = False
        self._take_state()

    # ------------------------------------------------------------------ the protocol

    def __call__(self, x: Array, y: Array) -> Array:
        """One training step on the batch ``(x, y)``; returns the loss (a fresh 0-d array), or
        ``(loss, output)`` with ``return_outputs`` (fresh copies too)."""
        self._check_batch(x, "x")
        self._check_batch(y, "y")
        self._sync()
        self._check_settings()
        key = (tuple(x.shape), dtype_name(x.dtype), tuple(y.shape), dtype_name(y.dtype),
               bool(getattr(self.model, "training", True)))
        entry = self._shapes.get(key)
        if entry is None:
            if len(self._shapes) >= self.max_graphs:
                return self._eager(x, y)
            entry = self._shapes[key] = self._new_shape(x, y)
        with self.engine.eager():
            entry.x[...] = x
            entry.y[...] = y
        if entry.handle is None:
            loss = self._capture(entry)
            if loss is not None:
                return loss
        self.engine.replay(entry.handle)
        return self._results(entry.loss)

    def write_back(self) -> None:
        """Make the objects hold the compiled state, usable eagerly: they hold the graphs'
        arrays already (the graphs update the model's and optimizer's own arrays in place, and
        each call leaves the per-step values bound; any per-step value an eager use replaced
        is taken into the graphs' arrays first). Each parameter group's ``lr`` is put back as
        a Python float (one host read per group), as schedules need it; the next call copies
        it into the graphs' device scalar again (no recapture)."""
        self._sync()
        for group in self.optimizer.param_groups:
            lr = group.settings["lr"]
            if not isinstance(lr, int | float):
                group["lr"] = float(self.backend.to_numpy(lr))

    def reload(self) -> None:
        """Take the objects' current state again (after a checkpoint load, an eager step, a
        changed learning rate): its values are copied into the arrays the graphs work on, in
        place, without recapture; when its structure changed (other entries, shapes or
        dtypes) the graphs are dropped and captured again at the next call of each shape."""
        arrays = self._arrays
        if arrays is None:
            self._take_state()
            return
        current = training_state(self.model, self.optimizer, device_scalars=True, copy=False)
        if current.keys() != arrays.keys() or any(
                tuple(current[k].shape) != tuple(arrays[k].shape)
                or current[k].dtype != arrays[k].dtype for k in current):
            self._drop_graphs()
            return
        rebind: list[str] = []
        with self.engine.eager():
            for name, value in current.items():
                target = arrays[name]
                if value is not target:
                    target[...] = value
                    rebind.append(name)
        for name in rebind:
            if not self._bind(name, arrays[name]):
                self._drop_graphs()  # an array the objects replaced that cannot be given back
                return
        self._optimizer_state = self.optimizer.state

    # ------------------------------------------------------------------ state

    def _take_state(self) -> None:
        """Per-step values as device scalars in the objects (Python numbers converted once,
        device arrays kept): the arrays the graphs will read and write."""
        state = training_state(self.model, self.optimizer, device_scalars=True, copy=False)
        self._slots = {k: v for k, v in state.items() if _is_per_step(k)}
        for name, value in self._slots.items():
            self._bind(name, value)
        self._optimizer_state = self.optimizer.state

    def _drop_graphs(self) -> None:
        self._shapes.clear()
        self._arrays = None
        self._constants = None
        self._take_state()

    def _settings(self) -> dict[str, Any]:
        """Every parameter group's settings other than ``lr`` (momentum, weight decay, betas,
        eps, ...), by ``param_groups/<g>/<name>``: Python values the step's kernels are
        launched with, so a captured graph holds them as constants."""
        return {f"param_groups/{g}/{name}": value
                for g, group in enumerate(self.optimizer.param_groups)
                for name, value in group.settings.items() if name != "lr"}

    def _check_settings(self) -> None:
        """Drop the graphs when a setting they hold as a constant changed since their capture
        (each shape is captured again at its next call, once)."""
        captured = self._constants
        if captured is None:
            return
        now = self._settings()
        if now != captured:
            changed = sorted(n for n in now.keys() | captured.keys()
                             if now.get(n) != captured.get(n))
            _log.info("%s: %s changed since capture; the graphs are captured again",
                      self._where, changed)
            self._drop_graphs()

    def _bound(self, name: str) -> Any:
        """What the objects hold now for the per-step entry ``name``."""
        fields = name.split("/")
        opt = self.optimizer
        if fields[0] == "rng":
            return self._generators[name].counter
        if fields[1] == "param_groups":
            g = int(fields[2])
            if fields[3] == "lr":
                return opt.param_groups[g].settings["lr"]
            return opt.state[_group_ranges(opt)[g][0]].get("step")
        return opt.state[int(fields[2])].get("step")

    def _bind(self, name: str, value: Array) -> bool:
        """Give the objects ``value`` for the entry ``name`` (no copy); False for an entry
        that cannot be rebound (a model array: those are loaded in place)."""
        fields = name.split("/")
        opt = self.optimizer
        if fields[0] == "rng":
            self._generators[name].load_state_arrays({"counter": value})
        elif fields[0] != "optim":
            return False
        elif fields[1] == "param_groups" and fields[3] == "lr":
            opt.param_groups[int(fields[2])].settings["lr"] = value
        elif fields[1] == "param_groups":
            for i in _group_ranges(opt)[int(fields[2])]:
                opt.state[i]["step"] = value
        else:
            opt.state[int(fields[2])][fields[3]] = value
        return True

    def _sync(self) -> None:
        """Copy into the device scalars any per-step value the objects hold instead (a
        schedule's new learning rate, an eager step's count) and give the scalars back; after
        an optimizer ``load_state_dict`` (a new state list), reload everything."""
        if self.optimizer.state is not self._optimizer_state:
            self.reload()
            return
        stale = [(name, slot, self._bound(name)) for name, slot in self._slots.items()]
        stale = [item for item in stale if item[2] is not item[1]]
        if not stale:
            return
        with self.engine.eager():
            for name, slot, value in stale:
                if isinstance(value, int) and name.startswith("rng/") and value > _INT32_MAX:
                    value -= 1 << 32  # a counter's int32 bit pattern (see nnbackend.random)
                slot[...] = value
        for name, slot, _ in stale:
            self._bind(name, slot)

    # ------------------------------------------------------------------ steps

    def _check_batch(self, a: Any, what: str) -> None:
        if not self.backend.holds(a):
            msg = (
                f"{self._where}: the batch's {what} is {describe_placement(a)}, but the model "
                f"is on {self.backend!r}: move batches there first (Backend.asarray)"
            )
            raise TypeError(msg)

    def _step_fn(self, x: Array, y: Array, loss_out: list[Array]) -> Callable[[], None]:
        """The eager step on ``x``, ``y``, then the new per-step values copied into the arrays
        the step read them from (so that a replay reads them next time) and the loss into
        ``loss_out[0]`` (made on the first run; with ``return_outputs`` the model's output into
        ``loss_out[1]``)."""
        model, loss_fn, opt, clip = self.model, self.loss_fn, self.optimizer, self.clip_grad_norm
        be = self.backend
        outputs = self.return_outputs

        def fn() -> None:
            slots = self._slots
            out, backprop = model.forward(x)
            loss, dy = loss_fn(out, y)
            opt.zero_grad()
            backprop(dy)
            if clip is not None:
                _clip_grad_norm(model, clip)
            opt.step()
            for name, slot in slots.items():
                value = self._bound(name)
                if value is not slot and value is not None:
                    slot[...] = value
                    self._bind(name, slot)
            if not loss_out:
                loss_out.append(be.xp.zeros((), dtype=loss.dtype, device=be.device))
                if outputs:
                    loss_out.append(be.xp.zeros(out.shape, dtype=out.dtype, device=be.device))
            loss_out[0][...] = loss
            if outputs:
                loss_out[1][...] = out

        return fn

    def _new_shape(self, x: Array, y: Array) -> _Shape:
        xp = self.backend.xp
        with self.engine.eager():
            xs, ys = xp.asarray(x, copy=True), xp.asarray(y, copy=True)
        loss: list[Array] = []
        return _Shape(xs, ys, self._step_fn(xs, ys, loss), loss)

    def _eager(self, x: Array, y: Array) -> Array:
        if not self._logged_eager:
            _log.info("%s: more than %d batch shapes; shape %s takes the eager step",
                      self._where, self.max_graphs, tuple(x.shape))
            self._logged_eager = True
        loss: list[Array] = []
        with self.engine.eager():
            self._step_fn(x, y, loss)()
        self.eager_steps += 1
        return (loss[0], loss[1]) if self.return_outputs else loss[0]

    def _results(self, buffers: list[Array]) -> Array:
        """Fresh copies of the static loss buffer (and output buffer): they outlive the next
        replay, which overwrites the buffers."""
        xp = self.backend.xp
        with self.engine.eager():
            copies = [xp.asarray(b, copy=True) for b in buffers]
        return (copies[0], copies[1]) if self.return_outputs else copies[0]

    def _capture(self, entry: _Shape) -> Array | None:
        """Warm up on a snapshot of the state and capture ``entry``'s graph; or, when the
        warm-up changed the state's structure, keep it as this call's step and return its
        loss (capture then waits for the next call)."""
        start = time.perf_counter()
        engine = self.engine
        before = training_state(self.model, self.optimizer, device_scalars=True, copy=False)
        with engine.eager():
            snapshot = {k: self.backend.xp.asarray(v, copy=True) for k, v in before.items()}
        engine.warmup(entry.fn)
        after = training_state(self.model, self.optimizer, device_scalars=True, copy=False)
        changed = sorted(k for k in before.keys() | after.keys()
                         if k not in before or k not in after or before[k] is not after[k])
        if changed:  # the warm-up was a real step on this batch: keep it
            self.compile_seconds += time.perf_counter() - start
            self.eager_steps += 1
            self._unsettled += 1
            if self._unsettled > _SETTLE_LIMIT:
                msg = (
                    f"{self._where}: {self._unsettled} steps in a row replaced arrays of the "
                    f"training state ({changed[:6]}); a CUDA graph needs them updated in place"
                )
                raise UnsteadyStateError(msg)
            self._take_state()
            return self._results(entry.loss)
        self._restore(snapshot)
        settings = self._settings()
        try:
            entry.handle = engine.capture(entry.fn, self._probe(entry), self._settings)
        except Exception as exc:
            # The objects may hold arrays the failed capture made: give them the device
            # scalars and the state of before the warm-up back, so that they stay usable.
            for name, slot in self._slots.items():
                self._bind(name, slot)
            self._restore(snapshot)
            msg = (
                f"{self._where}: capturing the step as a CUDA graph ({engine.name}) failed for "
                f"the batch x of shape {tuple(entry.x.shape)}: {exc}. The model and optimizer "
                "hold the state of before this call; the eager step still runs on them"
            )
            raise RuntimeError(msg) from exc
        self._restore(snapshot)  # a double executed the capture; a CUDA engine did not
        self._arrays = after
        if self._constants is None:  # the other graphs hold the same (see _check_settings)
            self._constants = settings
        self._unsettled = 0
        self.traces += 1
        self.compile_seconds += time.perf_counter() - start
        return None

    def _restore(self, snapshot: dict[str, Array]) -> None:
        state = training_state(self.model, self.optimizer, device_scalars=True, copy=False)
        with self.engine.eager():
            for name, value in snapshot.items():
                state[name][...] = value

    def _probe(self, entry: _Shape) -> Probe:
        model, opt = self.model, self.optimizer

        def probe() -> list[tuple[str, Array]]:
            state = training_state(model, opt, device_scalars=True, copy=False)
            return [("x", entry.x), ("y", entry.y), ("loss", entry.loss[0]),
                    *(("output", b) for b in entry.loss[1:]),
                    *sorted(state.items())]

        return probe
