"""The hand-written ``jax.jit`` MLP step: :class:`JaxJitMLP`, the peer of nnbackend's compiled
JAX step.

Written the way JAX's own examples write a training step: pure functions over a parameters
pytree (a list of ``(W, b)`` pairs, W (nₒ, nᵢ) as nnbackend's and PyTorch's, z = a Wᵀ + b),
``jax.value_and_grad`` of the loss, the optimizer update as a ``tree_map``, and the whole step
one ``jax.jit`` program whose state argument is donated (updated in place by XLA)::

    loss(θ)  = 1/B Σₙ (log Σ_c e^{zₙc} − zₙ,yₙ)          (log_softmax, take_along_axis)
    SGD      θ ← θ − α g
    Adam     m ← β1 m + (1 − β1) g,  v ← β2 v + (1 − β2) g²,  t ← t + 1
             θ ← θ − α m / (1 − β1ᵗ) / (√(v / (1 − β2ᵗ)) + ε)   (PyTorch's Adam)

The learning rate and the Adam constants are Python numbers folded into the program (a
hand-written step has no schedule to follow); Adam's step count t is a 0-d int32 in the state,
so one program serves every step.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .specs import ADAM_LR, SGD_LR

__all__ = ["JaxJitMLP"]

_BETAS = (0.9, 0.999)
_EPS = 1e-8


class JaxJitMLP:
    """A hand-written ``jax.jit`` MLP training step (ReLU, softmax cross-entropy, SGD or Adam).

    Parameters
    ----------
    parameters : sequence of (W, b)
        W (nₒ, nᵢ) and b (nₒ,) of each layer, host arrays (see
        :func:`nnbackend.bench.host_parameters`); copied to JAX's default device.
    optimizer : {"sgd", "adam"}
    lr : float, optional
        Default :data:`SGD_LR` or :data:`ADAM_LR`.
    donate : bool
        Donate the state to each call (default True).

    Attributes
    ----------
    state : tuple
        ``(params,)`` for SGD, ``(params, m, v, t)`` for Adam: the live arrays.
    traces : int
        Traces of the step so far (one per batch shape).
    compile_seconds : float
        Host time of the calls that traced (tracing, XLA compilation and that call's step), as
        :class:`nnbackend.compile.JaxStep` counts it.
    """

    kind = "jax-jit"

    def __init__(self, parameters: Sequence[tuple[np.ndarray, np.ndarray]], *,
                 optimizer: str = "sgd", lr: float | None = None, donate: bool = True) -> None:
        if optimizer not in ("sgd", "adam"):
            msg = f"JaxJitMLP: optimizer must be 'sgd' or 'adam', got {optimizer!r}"
            raise ValueError(msg)
        if not parameters:
            msg = "JaxJitMLP: needs at least one (W, b) layer"
            raise ValueError(msg)
        self._jax = jax = importlib.import_module("jax")
        jnp = importlib.import_module("jax.numpy")
        self.optimizer = optimizer
        self.lr = float(lr if lr is not None else ADAM_LR if optimizer == "adam" else SGD_LR)
        params = [(jnp.array(W), jnp.array(b)) for W, b in parameters]
        if optimizer == "adam":
            zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
            self.state: tuple[Any, ...] = (params, zeros, jax.tree_util.tree_map(
                jnp.zeros_like, params), jnp.zeros((), jnp.int32))
        else:
            self.state = (params,)
        self.traces = 0
        self.compile_seconds = 0.0
        update = self._adam if optimizer == "adam" else self._sgd

        def step(state: tuple[Any, ...], x: Any, y: Any) -> tuple[tuple[Any, ...], Any]:
            self.traces += 1  # runs at trace time only
            loss, grads = jax.value_and_grad(_loss)(state[0], x, y)
            return update(state, grads), loss

        self._step = jax.jit(step, donate_argnums=(0,) if donate else ())

    def __call__(self, x: Any, y: Any) -> Any:
        """One training step on ``(x, y)`` (JAX arrays); returns the loss (0-d, not waited
        for)."""
        traces, start = self.traces, time.perf_counter()
        self.state, loss = self._step(self.state, x, y)
        if self.traces != traces:
            self.compile_seconds += time.perf_counter() - start
        return loss

    def _sgd(self, state: tuple[Any, ...], grads: Any) -> tuple[Any, ...]:
        lr = self.lr
        return (self._jax.tree_util.tree_map(lambda p, g: p - lr * g, state[0], grads),)

    def _adam(self, state: tuple[Any, ...], grads: Any) -> tuple[Any, ...]:
        jnp = importlib.import_module("jax.numpy")
        tree_map = self._jax.tree_util.tree_map
        params, m, v, t = state
        (b1, b2), lr = _BETAS, self.lr
        t = t + 1
        tf = t.astype(jnp.float32)
        c1, c2 = 1 - b1 ** tf, 1 - b2 ** tf
        m = tree_map(lambda m_, g: b1 * m_ + (1 - b1) * g, m, grads)
        v = tree_map(lambda v_, g: b2 * v_ + (1 - b2) * g * g, v, grads)
        params = tree_map(lambda p, m_, v_: p - lr * (m_ / c1) / (jnp.sqrt(v_ / c2) + _EPS),
                          params, m, v)
        return params, m, v, t


def _loss(params: Any, x: Any, y: Any) -> Any:
    """Mean softmax cross-entropy of the MLP's logits (ReLU between the layers)."""
    jax = importlib.import_module("jax")
    jnp = importlib.import_module("jax.numpy")
    h = x
    for k, (W, b) in enumerate(params):
        h = h @ W.T + b
        if k < len(params) - 1:
            h = jax.nn.relu(h)
    logp = jax.nn.log_softmax(h)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
