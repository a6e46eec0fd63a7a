"""The convolutional benchmarks' steps: :func:`build_conv_workload` (one step of a target on
LeNet or the residual block), :func:`build_torch_conv_model` (PyTorch's network from the same
initial state) and :func:`conv_gemm_share` (the share of a step spent in its matrix products).

Each target runs the same step (see :mod:`nnbackend.bench.convspecs`):

``forward``
    Inference: the network in eval mode (batch normalisation with the running statistics,
    dropout off), nothing retained (``torch.no_grad()`` for PyTorch).
``fwd-bwd``
    Training mode: zero the gradients, forward, LeNet's cross-entropy and ∂L/∂logits (the
    residual block: the fixed cotangent g), backward into the gradients; ∂L/∂x only for the
    residual block.
``train-adam``
    ``fwd-bwd``, then an Adam step (lr 1e-3, PyTorch's defaults otherwise).

PyTorch eager uses ``torch.nn.Conv2d``/``BatchNorm2d``/``MaxPool2d``/``Dropout``,
``F.cross_entropy`` and ``torch.optim.Adam`` with as many threads as the process may use
(:func:`torch_threads`; oneDNN's convolutions). The floor is :mod:`nnbackend.bench.convfloor`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from typing import Any

import numpy as np

from .._native import _blas_threads
from ..backend import BackendUnavailableError, get_backend
from ..losses import CrossEntropyLoss
from ..optim import Adam
from .convfloor import NumpyLeNet, NumpyResBlock
from .convspecs import (
    DROPOUT_P,
    ConvSpec,
    build_conv_model,
    conv_parameters,
    make_conv_data,
)
from .counting import CountingNamespace
from .specs import ADAM_LR, _check_workload
from .workloads import (
    Target,
    Workload,
    _check_runs,
    _import_torch,
    _nnbackend_step,
    _sync_for,
    compiled_workload,
)

__all__ = [
    "GEMM_NAMES",
    "TORCH_GEMM_OPS",
    "MatmulTimer",
    "blas_core_share",
    "build_conv_workload",
    "build_torch_conv_model",
    "conv_gemm_share",
    "torch_threads",
]

GEMM_NAMES = frozenset({"matmul", "__matmul__", "__rmatmul__", "__imatmul__", "tensordot",
                        "vecdot", "einsum", "linalg.matmul", "np.matmul", "np.dot",
                        "np.tensordot", "np.einsum", ".dot"})
"""Calls counted as matrix products when timing nnbackend's step (:func:`conv_gemm_seconds`)."""

TORCH_GEMM_OPS = frozenset({"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm",
                            "aten::mkldnn_convolution", "aten::convolution_backward",
                            "aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward",
                            "aten::thnn_conv2d", "aten::mkldnn_convolution_backward"})
"""PyTorch operators whose own (self) CPU time counts as its products: matrix products and
oneDNN's convolutions, forward and backward (PyTorch does not lower them to GEMMs)."""


def torch_threads() -> int:
    """Set PyTorch's intra-op threads to the CPUs this process may use; returns the count."""
    torch = _import_torch()
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n = max(1, n or 1)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


# ============================================================================================
# PyTorch's networks


def build_torch_conv_model(spec: ConvSpec, device: str = "cpu", *, seed: int = 0) -> Any:
    """PyTorch's network for ``spec`` on ``device``, loaded with :func:`conv_parameters`.

    The modules carry the state-dict names of nnbackend's network: a ``torch.nn.Sequential``
    for LeNet, and ``Sequential(Residual(block), ReLU())`` for the residual block, with
    ``Residual.block`` the conv-BN-ReLU-conv-BN ``Sequential``.
    """
    torch = _import_torch()
    nn = torch.nn
    c1, c2 = spec.convs

    def conv(c: Any) -> Any:
        return nn.Conv2d(c.cin, c.cout, c.kernel, padding=c.padding, bias=c.bias)

    if spec.kind == "lenet":
        (a, b), (_, c), (_, d) = spec.linears
        model = nn.Sequential(
            conv(c1), nn.BatchNorm2d(c1.cout), nn.ReLU(), nn.MaxPool2d(2),
            conv(c2), nn.BatchNorm2d(c2.cout), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(a, b), nn.ReLU(), nn.Dropout(DROPOUT_P),
            nn.Linear(b, c), nn.ReLU(), nn.Dropout(DROPOUT_P), nn.Linear(c, d))
    else:
        block = nn.Sequential(conv(c1), nn.BatchNorm2d(c1.cout), nn.ReLU(), conv(c2),
                              nn.BatchNorm2d(c2.cout))
        model = nn.Sequential(_torch_residual(torch)(block), nn.ReLU())
    state = {k: torch.from_numpy(v) for k, v in conv_parameters(spec, seed=seed).items()}
    model.load_state_dict(state)
    return model.to(torch.device(device))


_RESIDUAL: dict[int, Any] = {}


def _torch_residual(torch: Any) -> Any:
    """``y = x + block(x)`` as a torch module (defined once per torch module object)."""
    cls = _RESIDUAL.get(id(torch))
    if cls is None:

        class Residual(torch.nn.Module):  # type: ignore[misc]
            def __init__(self, block: Any) -> None:
                super().__init__()
                self.block = block

            def forward(self, x: Any) -> Any:
                return x + self.block(x)

        cls = _RESIDUAL[id(torch)] = Residual
    return cls


# ============================================================================================
# The steps


def build_conv_workload(
    target: Target,
    spec: ConvSpec,
    workload: str,
    *,
    batch: int | None = None,
    seed: int = 0,
    namespace: CountingNamespace | None = None,
    matmul: Callable[..., Any] | None = None,
) -> Workload:
    """The step of ``workload`` on ``spec`` for ``target``, on fresh weights and data.

    Parameters
    ----------
    target, spec, workload
        What runs, which network, which step (module docstring).
    batch : int, optional
        Batch size (default ``spec.batch``).
    seed : int
        Seed of the initial state, the data and the dropout masks.
    namespace : CountingNamespace, optional
        nnbackend only: run on arrays wrapped by this counting namespace (over the target's
        namespace).
    matmul : callable, optional
        The floor only: its ``matmul(a, b, out=)`` (to time its products).
    """
    _check_workload(workload)
    if workload not in spec.workloads:
        msg = f"build_conv_workload: {spec.name} runs {', '.join(spec.workloads)}, not {workload!r}"
        raise ValueError(msg)
    if batch is not None and batch != spec.batch:
        spec = ConvSpec(spec.name, spec.kind, batch, spec.channels, spec.height, spec.width,
                        spec.classes)
    _check_runs(target, workload, "build_conv_workload")
    x_host, target_host = make_conv_data(spec, seed=seed)
    if target.impl == "jax":
        msg = f"no hand-written jax.jit step for the convolutional networks ({spec.name})"
        raise BackendUnavailableError(msg)
    if target.compiled:
        be = get_backend(target.backend)
        model = build_conv_model(spec, be, seed=seed)
        model.train()
        loss_fn = CrossEntropyLoss() if spec.kind == "lenet" else _Cotangent(be.xp)
        return compiled_workload(target, model, loss_fn, Adam(model.parameters(), lr=ADAM_LR),
                                 be.asarray(x_host), be.asarray(target_host))
    if target.impl == "nnbackend":
        return _nnbackend_workload(target, spec, workload, x_host, target_host, seed, namespace)
    if target.impl == "floor":
        return _floor_workload(spec, workload, x_host, target_host, seed, matmul)
    if target.impl == "torch":
        return _torch_workload(target, spec, workload, x_host, target_host, seed)
    msg = f"build_conv_workload: unknown implementation {target.impl!r}"
    raise ValueError(msg)


def _nnbackend_workload(target: Target, spec: ConvSpec, workload: str, x_host: np.ndarray,
                        target_host: np.ndarray, seed: int,
                        namespace: CountingNamespace | None) -> Workload:
    """nnbackend's step, through its public API only."""
    be = get_backend(target.backend)
    model = build_conv_model(spec, be, seed=seed)
    x, aim = be.asarray(x_host), be.asarray(target_host)
    if namespace is not None:
        for p in model.parameters():
            p.data = namespace.wrap(p.data)
        for name, buffer in list(model.named_buffers()):
            _set_buffer(model, name, namespace.wrap(buffer))
        x, aim = namespace.wrap(x), namespace.wrap(aim)
    if workload == "forward":
        model.eval()
        return _nnbackend_step(target, lambda: model(x), model)
    model.train()
    opt = Adam(model.parameters(), lr=ADAM_LR)
    train, input_grad = workload == "train-adam", spec.input_grad
    loss_fn = CrossEntropyLoss() if spec.kind == "lenet" else None

    def step() -> object:
        opt.zero_grad()
        y, backprop = model.forward(x, input_grad=input_grad)
        if loss_fn is None:
            result = backprop(aim)
        else:
            result, dlogits = loss_fn(y, aim)
            backprop(dlogits)
        if train:
            opt.step()
        return result

    return _nnbackend_step(target, step, model, optimizer=opt, loss=loss_fn)


class _Cotangent:
    """The residual block's "loss" for a compiled step: L = Σ y ⊙ g, whose ∂L/∂y is the fixed
    cotangent g the eager step backpropagates (the compiled step needs a loss function)."""

    def __init__(self, xp: Any) -> None:
        self.xp = xp

    def __call__(self, y: Any, g: Any) -> tuple[Any, Any]:
        return self.xp.sum(y * g), g


def _set_buffer(model: Any, dotted: str, value: Any) -> None:
    """Rebind the buffer ``dotted`` (``"1.running_mean"``) of ``model`` to ``value``."""
    *path, attr = dotted.split(".")
    owner = model
    for part in path:
        owner = owner[int(part)] if part.isdigit() else getattr(owner, part)
    setattr(owner, attr, value)


def _floor_workload(spec: ConvSpec, workload: str, x_host: np.ndarray, target_host: np.ndarray,
                    seed: int, matmul: Callable[..., Any] | None) -> Workload:
    """The hand-written NumPy step (its inputs in its own layout, converted once here)."""
    mm = np.matmul if matmul is None else matmul
    state = conv_parameters(spec, seed=seed)
    if spec.kind == "lenet":
        lenet = NumpyLeNet(spec, state, seed=seed, matmul=mm)
        x, labels = lenet.prepare(x_host), target_host
        parts: dict[str, Any] = {"model": lenet}
        if workload == "forward":
            return Workload(lambda: lenet.forward(x), parts=parts)
        if workload == "fwd-bwd":
            return Workload(lambda: lenet.loss_and_grad(x, labels), parts=parts)
        return Workload(lambda: lenet.train_step(x, labels), parts=parts)
    block = NumpyResBlock(spec, state, matmul=mm)
    x, g = block.prepare(x_host), block.prepare(target_host)
    parts = {"model": block}
    if workload == "forward":
        return Workload(lambda: block.forward(x), parts=parts)
    if workload == "fwd-bwd":
        return Workload(lambda: block.forward_backward(x, g), parts=parts)
    return Workload(lambda: block.train_step(x, g), parts=parts)


def _torch_workload(target: Target, spec: ConvSpec, workload: str, x_host: np.ndarray,
                    target_host: np.ndarray, seed: int) -> Workload:
    """PyTorch eager, written the way its documentation writes a training step."""
    torch = _import_torch()
    functional = importlib.import_module("torch.nn.functional")
    torch_threads()
    torch.manual_seed(seed)  # dropout's masks
    device = torch.device(target.device)
    model = build_torch_conv_model(spec, target.device, seed=seed)
    x = torch.from_numpy(x_host).to(device)
    aim = torch.from_numpy(target_host).to(device)
    sync = _sync_for(target)
    if workload == "forward":
        model.eval()

        def infer() -> object:
            with torch.no_grad():
                return model(x)

        return Workload(infer, sync)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=ADAM_LR)
    train = workload == "train-adam"
    if spec.input_grad:
        x.requires_grad_(True)

    def step() -> object:
        opt.zero_grad()
        y = model(x)
        if spec.kind == "lenet":
            loss = functional.cross_entropy(y, aim)
            loss.backward()
        else:
            x.grad = None
            y.backward(aim)
            loss = x.grad
        if train:
            opt.step()
        return loss

    return Workload(step, sync)


# ============================================================================================
# Time in the matrix products


class MatmulTimer:
    """``numpy.matmul`` that adds the seconds of each call to :attr:`seconds` (the floor's
    ``matmul=``); :attr:`shapes` records the operands' shapes of each call."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def __call__(self, a: Any, b: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = np.matmul(a, b, **kwargs)
        self.seconds += time.perf_counter() - start
        self.shapes.append((tuple(a.shape), tuple(b.shape)))
        return result

    def reset(self) -> None:
        self.seconds = 0.0
        self.shapes.clear()


def blas_core_share() -> Callable[[], float]:
    """A function giving the share of NumPy's BLAS threads a product called now runs on: 1
    normally, 1/k inside nnbackend's parallel parts (k parts on k Python threads, BLAS on one
    thread each: :func:`nnbackend._native.run_parts`).

    Weighting each product's seconds by it (:class:`CountingNamespace`'s ``weight``) makes
    products that run side by side add up to the time they take of the step: two parts each
    multiplying for 1 ms during the same millisecond are 1 ms of the step's products, not 2
    (unweighted, the residual block's share read 58–65 % where its products took ~35 %).
    """
    controller = _blas_threads()
    if controller is None:  # pragma: no cover - NumPy always links a BLAS
        return lambda: 1.0
    outside = max(1, int(controller.get_num_threads()))
    return lambda: int(controller.get_num_threads()) / outside


def conv_gemm_share(target: Target, spec: ConvSpec, workload: str, *, steps: int = 5,
                    seed: int = 0) -> float | None:
    """The share of a step spent in its matrix products, timed inside the real step.

    For each of ``steps`` steps (after two warm-up steps), the time inside the products over
    that same step's time, both on one clock in one instrumented step (so a busy machine
    slows both alike); the median over the steps:

    - the floor: every ``matmul`` of its convolutions and linear layers (:class:`MatmulTimer`);
    - nnbackend on NumPy: every call in :data:`GEMM_NAMES` (operators ``@`` included) through a
      timing :class:`CountingNamespace` (whose proxies add a microsecond or so to each of the
      step's calls: the share is, if anything, understated), a product in one of k parallel
      parts counting 1/k of its seconds (:func:`blas_core_share`);
    - PyTorch on the CPU: the self CPU time of :data:`TORCH_GEMM_OPS` under
      ``torch.profiler`` over the profiled step's wall time (oneDNN's convolution kernels are
      not GEMM calls: this is the share of its convolution and matrix kernels);
    - None elsewhere (device libraries run asynchronously; CuPy's paths take no proxies).
    """
    if target.impl == "floor":
        timer = MatmulTimer()
        wl = build_conv_workload(target, spec, workload, seed=seed, matmul=timer)
        return _median_share(wl, steps, lambda: timer.seconds, timer.reset)
    if target.impl == "nnbackend" and target.backend == "numpy":
        ns = CountingNamespace(get_backend("numpy").xp, timed=GEMM_NAMES,
                               weight=blas_core_share())
        wl = build_conv_workload(target, spec, workload, seed=seed, namespace=ns)
        return _median_share(wl, steps, lambda: sum(ns.seconds.values()), ns.reset)
    if target.impl == "torch" and not target.on_gpu:
        return _torch_gemm_share(target, spec, workload, steps=steps, seed=seed)
    return None


def _median_share(wl: Workload, steps: int, read: Callable[[], float],
                  reset: Callable[[], None]) -> float:
    wl()
    wl()
    shares = []
    for _ in range(steps):
        reset()
        start = time.perf_counter()
        wl()
        shares.append(read() / (time.perf_counter() - start))
    return statistics.median(shares)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Standard error (file descriptor 2) to /dev/null: torch.profiler's C++ side prints a
    line per profile there."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w", encoding="ascii") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _torch_gemm_share(target: Target, spec: ConvSpec, workload: str, *, steps: int,
                      seed: int) -> float:
    wl = build_conv_workload(target, spec, workload, seed=seed)
    return torch_profiled_share(wl, TORCH_GEMM_OPS, steps=steps)


def torch_profiled_share(wl: Workload, ops: Collection[str], *, steps: int) -> float:
    """The median, over ``steps`` profiled steps after two unprofiled ones, of the share of a
    PyTorch step's wall time that ``torch.profiler`` books as self CPU time of ``ops``."""
    profiler = importlib.import_module("torch.profiler")
    wl()
    wl()
    shares = []
    for _ in range(steps):
        with _quiet_stderr(), profiler.profile(activities=[profiler.ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            wl()
            wall = time.perf_counter() - start
        self_us: Counter[str] = Counter()
        for event in prof.key_averages():
            if event.key in ops:
                self_us[event.key] += event.self_cpu_time_total
        shares.append(sum(self_us.values()) * 1e-6 / wall)
    return statistics.median(shares)
