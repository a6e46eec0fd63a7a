"""The benchmark targets and their steps: :func:`get_target`, :func:`build_workload` (one
training or inference step of a target), :func:`gemm_workload` (its matrix products alone) and
:func:`build_torch_model` (PyTorch's MLP from nnbackend's initial weights)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backend import BackendUnavailableError, _import_or_unavailable, get_backend
from ..compile import compile_step
from ..losses import CrossEntropyLoss
from ..optim import SGD, Adam
from .counting import CountingNamespace
from .floor import NumpyMLP
from .jaxjit import JaxJitMLP
from .specs import (
    ADAM_LR,
    SGD_LR,
    MLPSpec,
    _check_workload,
    build_model,
    host_parameters,
    make_data,
)
from .timing import _no_sync

__all__ = [
    "COMPILED_WORKLOADS",
    "TARGETS",
    "Target",
    "Workload",
    "build_torch_model",
    "build_workload",
    "compiled_workload",
    "gemm_workload",
    "get_target",
    "runs",
]

TARGETS = ("floor", "torch-cpu", "nnbackend-numpy", "nnbackend-torch", "nnbackend-jax",
           "jax-jit-handwritten", "nnbackend-jax-jit", "torch-cuda", "nnbackend-cupy",
           "nnbackend-cupy-graph", "nnbackend-gpulike")
"""Every row kind, in table order: references first, so ratios are known when rows print."""

COMPILED_WORKLOADS = ("train-sgd", "train-adam")
"""The workloads of the compiled targets (``compiled``): a compiled step is a training step."""


@dataclass(frozen=True)
class Target:
    """What a row runs: ``impl`` (nnbackend, torch, floor, jax) on ``backend`` and ``device``;
    ``compiled`` for the whole step compiled into one program (``jax.jit``) or one captured
    CUDA graph, replayed per step."""

    name: str
    impl: str
    backend: str
    device: str
    compiled: bool = False

    @property
    def library(self) -> str:
        """The array library whose matrix products the step uses (numpy, cupy or torch)."""
        return "torch" if self.impl == "torch" else self.backend

    @property
    def on_gpu(self) -> bool:
        """True for CUDA targets."""
        return self.device.startswith("cuda")


def _import_torch() -> Any:
    """The torch module, or BackendUnavailableError with the install hint."""
    return _import_or_unavailable("torch", "PyTorch", "pip install torch")


def get_target(name: str) -> Target:
    """The :class:`Target` named ``name`` (one of :data:`TARGETS`).

    Raises
    ------
    BackendUnavailableError
        The target cannot run here; the message says why (no CUDA device, torch missing, ...).
    ValueError
        ``name`` is not one of :data:`TARGETS`.
    """
    if name == "floor":
        return Target(name, "floor", "numpy", "cpu")
    if name == "nnbackend-numpy":
        return Target(name, "nnbackend", "numpy", "cpu")
    if name in ("nnbackend-torch", "nnbackend-jax"):  # their CPU devices
        backend = name.removeprefix("nnbackend-")
        be = get_backend(backend)
        return Target(name, "nnbackend", backend, str(be.device))
    if name in ("nnbackend-jax-jit", "jax-jit-handwritten"):  # JAX's default device
        be = get_backend("jax")
        impl = "nnbackend" if name.startswith("nnbackend") else "jax"
        return Target(name, impl, "jax", str(be.device), compiled=True)
    if name in ("nnbackend-cupy", "nnbackend-cupy-graph"):
        be = get_backend("cupy")
        if name == "nnbackend-cupy-graph":
            try:
                importlib.import_module("nnbackend.compile.graph")
            except ImportError as exc:
                msg = f"CUDA graphs are unavailable ({exc})"
                raise BackendUnavailableError(msg) from exc
        return Target(name, "nnbackend", "cupy", f"cuda:{be.device.id}",
                      compiled=name.endswith("-graph"))
    if name == "nnbackend-gpulike":  # CuPy's code paths on the CPU (NumPy computes)
        return Target(name, "nnbackend", "gpulike", "gpulike:0")
    if name in ("torch-cpu", "torch-cuda"):
        torch = _import_torch()
        if name == "torch-cpu":
            return Target(name, "torch", "torch", "cpu")
        if not torch.cuda.is_available():
            msg = f"PyTorch {torch.__version__} sees no CUDA device"
            raise BackendUnavailableError(msg)
        return Target(name, "torch", "torch", "cuda:0")
    msg = f"unknown benchmark target {name!r}; choose from {', '.join(TARGETS)}"
    raise ValueError(msg)


def runs(target: Target, workload: str) -> bool:
    """Whether ``target`` has a ``workload`` row: compiled targets run the training steps
    (:data:`COMPILED_WORKLOADS`) only."""
    return not target.compiled or workload in COMPILED_WORKLOADS


def _check_runs(target: Target, workload: str, where: str) -> None:
    if not runs(target, workload):
        msg = (f"{where}: {target.name} compiles training steps only "
               f"({', '.join(COMPILED_WORKLOADS)}), not {workload!r}")
        raise ValueError(msg)


@dataclass(frozen=True)
class Workload:
    """One benchmarked step: ``step()`` may return before a device has finished; ``sync()``
    waits for it. Calling the workload runs both (what pytest-benchmark times). ``parts`` names
    the objects the step uses (``"model"``, ``"optimizer"``, ...) for tools that look inside
    it (:mod:`nnbackend.bench.breakdown`)."""

    step: Callable[[], object]
    sync: Callable[[], None] = _no_sync
    parts: dict[str, Any] = field(default_factory=dict, compare=False)

    def __call__(self) -> object:
        result = self.step()
        self.sync()
        return result


def _sync_for(target: Target) -> Callable[[], None]:
    """The device synchronisation of ``target``: its backend's, for CUDA targets."""
    if not target.on_gpu:
        return _no_sync
    device = target.device if target.backend == "torch" else None
    return get_backend(target.backend, device=device).synchronize


def _jax_step(step: Callable[[], object], model: Any, parts: dict[str, Any]) -> Workload:
    """A JAX step and its synchronisation: JAX dispatches asynchronously, even on the CPU, so
    the clock waits for the step's result and every parameter (the update's outputs)."""
    jax = importlib.import_module("jax")
    last: list[object] = [None]

    def run() -> object:
        last[0] = step()
        return last[0]

    def sync() -> None:
        jax.block_until_ready((last[0], [p.data for p in model.parameters()]))

    return Workload(run, sync, parts)


def _nnbackend_step(target: Target, step: Callable[[], object], model: Any,
                    **parts: Any) -> Workload:
    """``step`` with the synchronisation its backend needs; ``parts`` besides the model."""
    parts["model"] = model
    if target.backend == "jax":
        return _jax_step(step, model, parts)
    return Workload(step, _sync_for(target), parts)


def build_workload(
    target: Target,
    spec: MLPSpec,
    workload: str,
    *,
    batch: int | None = None,
    seed: int = 0,
    namespace: CountingNamespace | None = None,
) -> Workload:
    """The step of ``workload`` on ``spec`` for ``target``, on fresh weights and data.

    Parameters
    ----------
    target, spec, workload
        What runs, which MLP, which step (see :mod:`nnbackend.bench`).
    batch : int, optional
        Batch size (default ``spec.batch``).
    seed : int
        Seed of the weights and the data.
    namespace : CountingNamespace, optional
        nnbackend and floor only: run on arrays wrapped by this counting namespace (it must
        wrap the target's namespace: ``array_api_compat.numpy`` for nnbackend on NumPy,
        ``numpy`` for the floor).

    Raises
    ------
    ValueError
        A compiled target and a workload that is not a training step (see :func:`runs`).
    """
    _check_workload(workload)
    _check_runs(target, workload, "build_workload")
    batch = batch or spec.batch
    x_host, labels_host = make_data(spec, batch, seed=seed)
    if target.impl == "jax":
        return _jax_jit_workload(spec, workload, x_host, labels_host, seed)
    if target.compiled:
        be = get_backend(target.backend)
        model = build_model(spec, be, seed=seed)
        opt = Adam(model.parameters(), lr=ADAM_LR) if workload == "train-adam" else SGD(
            model.parameters(), lr=SGD_LR)
        return compiled_workload(target, model, CrossEntropyLoss(), opt,
                                 be.asarray(x_host), be.asarray(labels_host))
    if target.impl == "nnbackend":
        return _nnbackend_workload(target, spec, workload, x_host, labels_host, seed, namespace)
    if target.impl == "floor":
        return _floor_workload(spec, workload, x_host, labels_host, seed, namespace)
    if target.impl == "torch":
        if namespace is not None:
            msg = "build_workload: torch targets are counted with count_calls, not a namespace"
            raise ValueError(msg)
        return _torch_workload(target, spec, workload, x_host, labels_host, seed)
    msg = f"build_workload: unknown implementation {target.impl!r}"
    raise ValueError(msg)


def _nnbackend_workload(target: Target, spec: MLPSpec, workload: str, x_host: np.ndarray,
                        labels_host: np.ndarray, seed: int,
                        namespace: CountingNamespace | None) -> Workload:
    """nnbackend's step, through its public API only."""
    be = get_backend(target.backend)
    model = build_model(spec, be, seed=seed)
    x, labels = be.asarray(x_host), be.asarray(labels_host)
    if namespace is not None:
        for p in model.parameters():
            p.data = namespace.wrap(p.data)
        x, labels = namespace.wrap(x), namespace.wrap(labels)
    loss_fn = CrossEntropyLoss()
    if workload == "forward":
        return _nnbackend_step(target, lambda: model(x), model)
    opt = Adam(model.parameters(), lr=ADAM_LR) if workload == "train-adam" else SGD(
        model.parameters(), lr=SGD_LR)
    train = workload != "fwd-bwd"

    def step() -> object:
        opt.zero_grad()
        logits, backprop = model.forward(x)
        loss, dlogits = loss_fn(logits, labels)
        backprop(dlogits)
        if train:
            opt.step()
        return loss

    return _nnbackend_step(target, step, model)


def compiled_workload(target: Target, model: Any, loss_fn: Any, optimizer: Any, x: Any,
                      aim: Any) -> Workload:
    """nnbackend's training step compiled by :func:`nnbackend.compile_step` (``jax.jit`` on
    JAX, a CUDA graph on CuPy) on the batch ``(x, aim)``; ``parts["compiled"]`` is the step
    (its ``compile_seconds`` and ``traces``).

    Synchronisation: JAX waits for the last step's loss (``block_until_ready``: one program
    makes the loss and the new state together), CuPy for the device.
    """
    step = compile_step(model, loss_fn, optimizer)
    parts: dict[str, Any] = {"model": model, "optimizer": optimizer, "loss": loss_fn,
                             "compiled": step}
    if target.backend == "jax":
        return _jax_loss_workload(lambda: step(x, aim), parts)
    return Workload(lambda: step(x, aim), _sync_for(target), parts)


def _jax_loss_workload(step: Callable[[], object], parts: dict[str, Any]) -> Workload:
    """A compiled JAX step whose clock waits for its loss (``block_until_ready``)."""
    jax = importlib.import_module("jax")
    last: list[Any] = [None]

    def run() -> object:
        last[0] = step()
        return last[0]

    def sync() -> None:
        jax.block_until_ready(last[0])

    return Workload(run, sync, parts)


def _jax_jit_workload(spec: MLPSpec, workload: str, x_host: np.ndarray,
                      labels_host: np.ndarray, seed: int) -> Workload:
    """The hand-written ``jax.jit`` step (:class:`JaxJitMLP`) from nnbackend's weights."""
    jnp = importlib.import_module("jax.numpy")
    params = host_parameters(build_model(spec, "numpy", seed=seed))
    peer = JaxJitMLP(params, optimizer="adam" if workload == "train-adam" else "sgd")
    x, labels = jnp.asarray(x_host), jnp.asarray(labels_host)
    return _jax_loss_workload(lambda: peer(x, labels), {"model": peer, "compiled": peer})


def _floor_workload(spec: MLPSpec, workload: str, x_host: np.ndarray, labels_host: np.ndarray,
                    seed: int, namespace: CountingNamespace | None) -> Workload:
    """The hand-written NumPy step."""
    params = host_parameters(build_model(spec, "numpy", seed=seed))
    optimizer = "adam" if workload == "train-adam" else "sgd"
    xp: Any = np if namespace is None else namespace
    floor = NumpyMLP(params, optimizer=optimizer, xp=xp)
    x: Any = x_host
    labels: Any = labels_host
    if namespace is not None:
        x, labels = namespace.wrap(x_host), namespace.wrap(labels_host)
    if workload == "forward":
        return Workload(lambda: floor.forward(x))
    if workload == "fwd-bwd":
        return Workload(lambda: floor.loss_and_grad(x, labels))
    return Workload(lambda: floor.train_step(x, labels))


def build_torch_model(spec: MLPSpec, device: str = "cpu", *, seed: int = 0) -> Any:
    """PyTorch's MLP for ``spec``, from the same initial weights as nnbackend's.

    ``torch.nn.Linear`` layers with ``torch.nn.ReLU`` between them, in a ``torch.nn.Sequential``
    on ``device``; each layer's W (nₒ, nᵢ) and b (nₒ,) are copied from :func:`build_model`
    ``(spec, seed=seed)`` (see :func:`host_parameters`).

    Parameters
    ----------
    spec : MLPSpec
    device : str
        A torch device (``"cpu"``, ``"cuda:0"``).
    seed : int
        Seed of the initial weights (as in :func:`build_model`).

    Raises
    ------
    BackendUnavailableError
        PyTorch is not installed.
    """
    torch = _import_torch()
    layers: list[Any] = []
    for i, (W, b) in enumerate(host_parameters(build_model(spec, "numpy", seed=seed))):
        if i:
            layers.append(torch.nn.ReLU())
        linear = torch.nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(W))
            linear.bias.copy_(torch.from_numpy(b))
        layers.append(linear)
    return torch.nn.Sequential(*layers).to(torch.device(device))


def _torch_workload(target: Target, spec: MLPSpec, workload: str, x_host: np.ndarray,
                    labels_host: np.ndarray, seed: int) -> Workload:
    """PyTorch eager, written the way its documentation writes a training step."""
    torch = _import_torch()
    functional = importlib.import_module("torch.nn.functional")
    device = torch.device(target.device)
    model = build_torch_model(spec, target.device, seed=seed)
    x = torch.from_numpy(x_host).to(device)
    labels = torch.from_numpy(labels_host).to(device)
    sync = _sync_for(target)
    if workload == "forward":

        def infer() -> object:
            with torch.no_grad():
                return model(x)

        return Workload(infer, sync)
    if workload == "train-adam":
        opt = torch.optim.Adam(model.parameters(), lr=ADAM_LR)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=SGD_LR)
    train = workload != "fwd-bwd"

    def step() -> object:
        opt.zero_grad()
        loss = functional.cross_entropy(model(x), labels)
        loss.backward()
        if train:
            opt.step()
        return loss

    return Workload(step, sync)


def gemm_workload(target: Target, spec: MLPSpec, workload: str, *,
                  batch: int | None = None, seed: int = 0) -> Workload:
    """The matrix products of one step of ``workload``, alone, on ``target``'s library (for a
    compiled JAX target, all of them in one ``jax.jit`` program).

    Per layer (nᵢ → nₒ): forward a Wᵀ, (B, nᵢ)·(nᵢ, nₒ); for the other workloads also δᵀ a,
    (nₒ, B)·(B, nᵢ), and, except on the first layer, δ W, (B, nₒ)·(nₒ, nᵢ). Operands are the
    same transposed views the step uses; outputs are preallocated.
    """
    _check_workload(workload)
    batch = batch or spec.batch
    rng = np.random.default_rng(seed)
    host: list[tuple[str, np.ndarray, np.ndarray, tuple[int, int]]] = []
    for i, (n_in, n_out) in enumerate(spec.layers):
        a = rng.standard_normal((batch, n_in), dtype=np.float32)
        W = rng.standard_normal((n_out, n_in), dtype=np.float32)
        host.append(("a Wᵀ", a, W, (batch, n_out)))
        if workload != "forward":
            dz = rng.standard_normal((batch, n_out), dtype=np.float32)
            host.append(("δᵀ a", dz, a, (n_out, n_in)))
            if i:
                host.append(("δ W", dz, W, (batch, n_in)))

    def operands(move: Callable[[np.ndarray], Any]) -> list[tuple[Any, Any, Any]]:
        ops = []
        for kind, left, right, shape in host:
            x, y, out = move(left), move(right), move(np.empty(shape, np.float32))
            if kind == "a Wᵀ":
                ops.append((x, y.T, out))
            elif kind == "δᵀ a":
                ops.append((x.T, y, out))
            else:
                ops.append((x, y, out))
        return ops

    if target.library == "numpy":
        numpy_ops = operands(lambda v: v)

        def numpy_products() -> None:
            for left, right, out in numpy_ops:
                np.matmul(left, right, out=out)

        return Workload(numpy_products)
    if target.library == "cupy":
        cupy = importlib.import_module("cupy")
        be = get_backend("cupy")
        with be.device:
            cupy_ops = operands(cupy.asarray)

        def cupy_products() -> None:
            for left, right, out in cupy_ops:
                cupy.matmul(left, right, out=out)

        return Workload(cupy_products, be.synchronize)
    if target.library == "gpulike":
        gpulike = get_backend("gpulike").xp
        gpulike_ops = operands(gpulike.asarray)

        def gpulike_products() -> None:
            for left, right, out in gpulike_ops:
                gpulike.matmul(left, right, out=out)

        return Workload(gpulike_products)
    if target.library == "jax":  # no out=: JAX arrays are immutable
        jax = importlib.import_module("jax")
        jnp = importlib.import_module("jax.numpy")
        jax_ops = operands(jnp.asarray)
        results: list[Any] = []
        pairs = [(left, right) for left, right, _ in jax_ops]
        if target.compiled:  # the products as one program too: one dispatch, as the step's
            program = jax.jit(lambda ops: [jnp.matmul(a, b) for a, b in ops])

            def jax_program() -> None:
                results[:] = program(pairs)

            return Workload(jax_program, lambda: jax.block_until_ready(results))

        def jax_products() -> None:
            results[:] = [jnp.matmul(left, right) for left, right in pairs]

        return Workload(jax_products, lambda: jax.block_until_ready(results))
    torch = _import_torch()
    device = torch.device(target.device)
    torch_ops = operands(lambda v: torch.from_numpy(v).to(device))

    def torch_products() -> None:
        for left, right, out in torch_ops:
            torch.mm(left, right, out=out)

    return Workload(torch_products, _sync_for(target))
