"""The sequence benchmarks' steps: :func:`build_seq_workload` (one step of a target on the
transformer encoder layer or the LSTM), :func:`build_torch_seq_model` (PyTorch's layer from the
same initial state) and :func:`seq_gemm_share` (the share of a step spent in its matrix
products).

Each target runs the same step (see :mod:`nnbackend.bench.seqspecs`):

``forward``
    Inference: the layer's output y, nothing retained (``torch.no_grad()`` for PyTorch; its
    layer in eval mode, which changes nothing with dropout 0 but lets PyTorch take its
    inference fast path where it has one).
``fwd-bwd``
    Zero the gradients, forward, L = mean((y − t)²) and ∂L/∂y, backward into the parameters'
    gradients and ∂L/∂x.
``train-adam``
    ``fwd-bwd``, then an Adam step (lr 1e-3, PyTorch's defaults otherwise).

The steps return y (forward) or the loss L, a 0-d array (the others).

PyTorch eager runs ``torch.nn.TransformerEncoderLayer`` with ``src_mask`` the causal
``generate_square_subsequent_mask(T)`` and ``is_causal=True`` (PyTorch's CPU attention kernel
then skips the masked blocks), and ``torch.nn.LSTM`` (oneDNN's fused RNN kernels on the CPU),
``F.mse_loss`` and ``torch.optim.Adam`` with as many threads as the process may use. There is
no hand-written floor for these layers.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from ..backend import BackendUnavailableError, get_backend
from ..losses import MSELoss
from ..optim import Adam
from .convworkloads import (
    GEMM_NAMES,
    TORCH_GEMM_OPS,
    _median_share,
    blas_core_share,
    torch_profiled_share,
    torch_threads,
)
from .counting import CountingNamespace
from .seqspecs import SeqSpec, build_seq_model, make_seq_data, seq_parameters
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
    "TORCH_SEQ_GEMM_OPS",
    "build_seq_workload",
    "build_torch_seq_model",
    "seq_gemm_share",
]

TORCH_SEQ_GEMM_OPS = TORCH_GEMM_OPS | frozenset({
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
    "aten::mkldnn_rnn_layer", "aten::mkldnn_rnn_layer_backward"})
"""PyTorch operators whose own (self) CPU time counts as the sequence layers' products: its
matrix products, its fused CPU attention (QKᵀ, softmax and A·V in one kernel) and oneDNN's
fused LSTM layer (the products and the gates), forward and backward. The fused kernels hold
elementwise work too: PyTorch's share is an upper bound."""


# ============================================================================================
# PyTorch's layers


def build_torch_seq_model(spec: SeqSpec, device: str = "cpu", *, seed: int = 0) -> Any:
    """PyTorch's layer for ``spec`` on ``device``, loaded with :func:`seq_parameters`:
    ``torch.nn.TransformerEncoderLayer(d, nhead, dim_feedforward, dropout=0.0,
    activation="gelu", batch_first=True, norm_first=True)`` or ``torch.nn.LSTM(input_size,
    hidden_size, batch_first=True)``."""
    torch = _import_torch()
    nn = torch.nn
    if spec.kind == "transformer":
        model = nn.TransformerEncoderLayer(spec.width, spec.heads, spec.hidden, dropout=0.0,
                                           activation="gelu", batch_first=True,
                                           norm_first=True)
    else:
        model = nn.LSTM(spec.width, spec.hidden, batch_first=True)
    state = {k: torch.from_numpy(v) for k, v in seq_parameters(spec, seed=seed).items()}
    model.load_state_dict(state)
    return model.to(torch.device(device))


def _torch_forward(spec: SeqSpec, model: Any, device: Any) -> Any:
    """``x -> y`` for PyTorch's layer (the causal mask made once, here)."""
    torch = _import_torch()
    if spec.kind == "lstm":
        return lambda x: model(x)[0]
    mask = torch.nn.Transformer.generate_square_subsequent_mask(spec.length, device=device)
    return lambda x: model(x, src_mask=mask, is_causal=True)


# ============================================================================================
# The steps


def build_seq_workload(
    target: Target,
    spec: SeqSpec,
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
        What runs, which layer, which step (module docstring).
    batch : int, optional
        Batch size (default ``spec.batch``).
    seed : int
        Seed of the initial state and the data.
    namespace : CountingNamespace, optional
        nnbackend only: run on arrays wrapped by this counting namespace (over the target's
        namespace).

    Raises
    ------
    BackendUnavailableError
        The floor (none is written for these layers), or a layer nnbackend lacks.
    """
    _check_workload(workload)
    if workload not in spec.workloads:
        msg = f"build_seq_workload: {spec.name} runs {', '.join(spec.workloads)}, not {workload!r}"
        raise ValueError(msg)
    spec = spec.with_batch(batch)
    _check_runs(target, workload, "build_seq_workload")
    x_host, target_host = make_seq_data(spec, seed=seed)
    if target.impl == "jax":
        msg = f"no hand-written jax.jit step for the sequence layers ({spec.name})"
        raise BackendUnavailableError(msg)
    if target.compiled:
        be = get_backend(target.backend)
        model = build_seq_model(spec, be, seed=seed)
        model.train()
        loss_fn = MSELoss() if spec.kind == "transformer" else _OutputLoss(MSELoss())
        return compiled_workload(target, model, loss_fn, Adam(model.parameters(), lr=ADAM_LR),
                                 be.asarray(x_host), be.asarray(target_host))
    if target.impl == "nnbackend":
        return _nnbackend_workload(target, spec, workload, x_host, target_host, seed, namespace)
    if target.impl == "torch":
        return _torch_workload(target, spec, workload, x_host, target_host, seed)
    if target.impl == "floor":
        msg = f"there is no hand-written floor for the sequence layers ({spec.name})"
        raise BackendUnavailableError(msg)
    msg = f"build_seq_workload: unknown implementation {target.impl!r}"
    raise ValueError(msg)


def _nnbackend_workload(target: Target, spec: SeqSpec, workload: str, x_host: np.ndarray,
                        target_host: np.ndarray, seed: int,
                        namespace: CountingNamespace | None) -> Workload:
    """nnbackend's step, through its public API only."""
    be = get_backend(target.backend)
    model = build_seq_model(spec, be, seed=seed)
    x, aim = be.asarray(x_host), be.asarray(target_host)
    if namespace is not None:
        for p in model.parameters():
            p.data = namespace.wrap(p.data)
        x, aim = namespace.wrap(x), namespace.wrap(aim)
    inputs, output, seed_grad = _nnbackend_io(spec, x)
    if workload == "forward":
        model.eval()
        return _nnbackend_step(target, lambda: output(model(inputs)), model)
    model.train()
    opt = Adam(model.parameters(), lr=ADAM_LR)
    train, loss_fn = workload == "train-adam", MSELoss()

    def step() -> object:
        opt.zero_grad()
        y, backprop = model.forward(inputs, input_grad=True)
        loss, dy = loss_fn(output(y), aim)
        backprop(seed_grad(dy))
        if train:
            opt.step()
        return loss

    return _nnbackend_step(target, step, model, optimizer=opt, loss=loss_fn)


def _nnbackend_io(spec: SeqSpec, x: Any) -> tuple[Any, Any, Any]:
    """How nnbackend's layer is called: (its input, ``y -> the output sequence``, ``∂L/∂y ->
    what its backprop takes``).

    The transformer layer takes x (causal by its constructor's ``is_causal=True``: the layer
    takes one input, so the flag PyTorch's ``forward`` takes lives there) and returns y. The
    LSTM returns ``(output, (h_n, c_n))`` as PyTorch's does; its backprop takes the gradients
    of the same structure, None for the states (nothing depends on them here).
    """
    if spec.kind == "transformer":
        return x, _identity, _identity
    return x, _first, _lstm_cotangent


class _OutputLoss:
    """The LSTM's loss for a compiled step: ``loss(output)`` of its ``(output, (h_n, c_n))``,
    with the states' gradients None (nothing depends on them), as the eager step's."""

    def __init__(self, loss: Any) -> None:
        self.loss = loss

    def __call__(self, y: Any, aim: Any) -> tuple[Any, Any]:
        loss, dy = self.loss(y[0], aim)
        return loss, (dy, None)


def _identity(value: Any) -> Any:
    return value


def _first(y: Any) -> Any:
    return y[0]


def _lstm_cotangent(dy: Any) -> Any:
    return (dy, None)


def _torch_workload(target: Target, spec: SeqSpec, workload: str, x_host: np.ndarray,
                    target_host: np.ndarray, seed: int) -> Workload:
    """PyTorch eager, written the way its documentation writes a training step."""
    torch = _import_torch()
    functional = importlib.import_module("torch.nn.functional")
    torch_threads()
    device = torch.device(target.device)
    model = build_torch_seq_model(spec, target.device, seed=seed)
    x = torch.from_numpy(x_host).to(device)
    aim = torch.from_numpy(target_host).to(device)
    sync = _sync_for(target)
    forward = _torch_forward(spec, model, device)
    parts: dict[str, Any] = {"model": model}
    if workload == "forward":
        model.eval()

        def infer() -> object:
            with torch.no_grad():
                return forward(x)

        return Workload(infer, sync, parts)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=ADAM_LR)
    train = workload == "train-adam"
    x.requires_grad_(True)
    parts.update(optimizer=opt, input=x)

    def step() -> object:
        opt.zero_grad()
        x.grad = None
        loss = functional.mse_loss(forward(x), aim)
        loss.backward()
        if train:
            opt.step()
        return loss

    return Workload(step, sync, parts)


# ============================================================================================
# Time in the matrix products


def seq_gemm_share(target: Target, spec: SeqSpec, workload: str, *, steps: int = 5,
                   seed: int = 0) -> float | None:
    """The share of a step spent in its matrix products, timed inside the real step (as
    :func:`nnbackend.bench.conv_gemm_share` does for the convolutional networks).

    - nnbackend on NumPy: every call in :data:`GEMM_NAMES` through a timing
      :class:`CountingNamespace` (its proxies slow every call a little: if anything the share
      is understated);
    - PyTorch on the CPU: the self CPU time of :data:`TORCH_SEQ_GEMM_OPS` under
      ``torch.profiler`` over the profiled step's wall time (an upper bound: the fused kernels
      hold elementwise work);
    - None elsewhere (device libraries run asynchronously; CuPy's paths take no proxies).
    """
    if target.impl == "nnbackend" and target.backend == "numpy":
        ns = CountingNamespace(get_backend("numpy").xp, timed=GEMM_NAMES,
                               weight=blas_core_share())
        wl = build_seq_workload(target, spec, workload, seed=seed, namespace=ns)
        return _median_share(wl, steps, lambda: sum(ns.seconds.values()), ns.reset)
    if target.impl == "torch" and not target.on_gpu:
        return _torch_share(target, spec, workload, steps=steps, seed=seed)
    return None


def _torch_share(target: Target, spec: SeqSpec, workload: str, *, steps: int,
                 seed: int) -> float:
    wl = build_seq_workload(target, spec, workload, seed=seed)
    return torch_profiled_share(wl, TORCH_SEQ_GEMM_OPS, steps=steps)
