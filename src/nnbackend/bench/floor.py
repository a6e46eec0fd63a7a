"""The hand-written NumPy floor: :class:`NumpyMLP`, the speed a NumPy library could hope for."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .specs import ADAM_LR, SGD_LR

__all__ = ["NumpyMLP", "flat_adam_update"]


@dataclass
class _Buffers:
    """Per-batch-size scratch arrays of :class:`NumpyMLP`."""

    z: list[Any]  # layer outputs (B, nₒ), ReLU applied in place on hidden layers
    dz: list[Any]  # ∂L/∂ of hidden outputs (B, nₒ)
    mask: list[Any]  # [a > 0] of hidden outputs (B, nₒ), bool
    grad: Any  # ∂L/∂logits (B, C), starts as the shifted logits
    rowmax: Any  # (B, 1)
    rowsum: Any  # (B, 1)
    rowsum_flat: Any  # (B,) view of rowsum
    loss: Any  # (B,) per-sample losses
    rows: Any  # 0..B−1


class NumpyMLP:
    """A hand-written NumPy MLP with ReLU, softmax cross-entropy and SGD or Adam: the floor.

    Everything a thin NumPy library cannot do cheaply is done here: all buffers are allocated
    once per batch size, matrix products write into them (``matmul(..., out=)``), ReLU and its
    mask are applied in place, the softmax-cross-entropy gradient is fused, and the parameters
    and gradients are views of two flat buffers, so the optimizers update everything in place
    with a constant number of calls and no temporaries.

    Forward, per layer: z = a Wᵀ + b, a = max(z, 0) on hidden layers. Loss, with s the max-
    shifted logits: L = 1/B Σₙ (log Σ_c e^{sₙc} − sₙ,yₙ); gradient ∂L/∂z = (softmax − onehot)/B,
    computed as e^s / (B Σ e^s) with 1/B subtracted at the labels. Backward: ∂L/∂W = δᵀ a,
    ∂L/∂b = Σₙ δₙ, δ_prev = (δ W) ⊙ [a > 0].

    SGD (θ ← θ − α g) folds α into the loss gradient, so the products yield α g directly and
    the update is one subtraction. Adam (PyTorch's ``torch.optim.Adam``, no weight decay) keeps
    the moments scaled as m̄ = m / (1 − β1) and v̄ = v / (1 − β2), which saves two passes::

        m̄ ← β1 m̄ + g,   v̄ ← β2 v̄ + g²,   k = √((1 − β2) / (1 − β2ᵗ))
        θ ← θ − α (1 − β1) / ((1 − β1ᵗ) k) · m̄ / (√v̄ + ε / k)

    which is algebraically θ ← θ − α m̂ / (√v̂ + ε).

    Parameters
    ----------
    parameters : sequence of (W, b)
        W (nₒ, nᵢ) and b (nₒ,) of each layer, host arrays of one floating dtype (see
        :func:`host_parameters`); copied.
    optimizer : {"sgd", "adam"}
    lr : float, optional
        α > 0 (default :data:`SGD_LR` or :data:`ADAM_LR`).
    betas, eps : Adam's β1, β2 and ε.
    xp : module
        NumPy, or a :class:`CountingNamespace` over it (to count the floor's calls).

    Attributes
    ----------
    weights, biases : list of arrays
        The parameters (views of one flat buffer), updated in place.
    weight_grads, bias_grads : list of arrays
        After :meth:`loss_and_grad`: ∂L/∂W and ∂L/∂b. After an SGD :meth:`train_step` they
        hold α ∂L/∂W and α ∂L/∂b.
    """

    def __init__(
        self,
        parameters: Sequence[tuple[Any, Any]],
        *,
        optimizer: str = "sgd",
        lr: float | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        xp: Any = np,
    ) -> None:
        if optimizer not in ("sgd", "adam"):
            msg = f"NumpyMLP: optimizer must be 'sgd' or 'adam', got {optimizer!r}"
            raise ValueError(msg)
        if not parameters:
            msg = "NumpyMLP: needs at least one (W, b) layer"
            raise ValueError(msg)
        self.xp = xp
        self.optimizer = optimizer
        self.lr = float(lr if lr is not None else SGD_LR if optimizer == "sgd" else ADAM_LR)
        if not self.lr > 0.0:  # SGD divides by α (it is folded into the loss gradient)
            msg = f"NumpyMLP: lr must be positive, got {lr!r}"
            raise ValueError(msg)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        host = [(np.asarray(W), np.asarray(b)) for W, b in parameters]
        for i, (W, b) in enumerate(host):
            if W.ndim != 2 or b.shape != (W.shape[0],) or b.dtype != W.dtype:
                msg = (f"NumpyMLP: layer {i} has W {W.shape} {W.dtype} and b {b.shape} "
                       f"{b.dtype}; need shapes (o, i) and (o,) of one dtype")
                raise ValueError(msg)
        shapes = [shape for W, b in host for shape in (W.shape, b.shape)]
        sizes = [math.prod(shape) for shape in shapes]
        dtype = host[0][0].dtype
        # one flat buffer for the parameters and one for the gradients, the layers' arrays
        # being views of them: an optimizer step is a constant number of calls
        self._theta = xp.asarray(np.concatenate([a.ravel() for pair in host for a in pair]))
        self._grad = xp.zeros(sum(sizes), dtype=dtype)
        theta_views, grad_views, offset = [], [], 0
        for shape, size in zip(shapes, sizes, strict=True):
            theta_views.append(xp.reshape(self._theta[offset:offset + size], shape))
            grad_views.append(xp.reshape(self._grad[offset:offset + size], shape))
            offset += size
        self.weights, self.biases = theta_views[0::2], theta_views[1::2]
        self.weight_grads, self.bias_grads = grad_views[0::2], grad_views[1::2]
        self._step = 0
        self._adam: tuple[Any, Any, Any] | None = None
        if optimizer == "adam":  # m̄, v̄ and a scratch array
            self._adam = (xp.zeros_like(self._theta), xp.zeros_like(self._theta),
                          xp.empty_like(self._theta))
        self._buffers: dict[int, _Buffers] = {}

    def _buffers_for(self, batch: int) -> _Buffers:
        """The scratch arrays for batch size ``batch`` (allocated on first use)."""
        buffers = self._buffers.get(batch)
        if buffers is None:
            xp, dtype = self.xp, self.weights[0].dtype
            widths = [W.shape[0] for W in self.weights]
            hidden = widths[:-1]
            rowsum = xp.empty((batch, 1), dtype=dtype)
            buffers = _Buffers(
                z=[xp.empty((batch, n), dtype=dtype) for n in widths],
                dz=[xp.empty((batch, n), dtype=dtype) for n in hidden],
                mask=[xp.empty((batch, n), dtype=bool) for n in hidden],
                grad=xp.empty((batch, widths[-1]), dtype=dtype),
                rowmax=xp.empty((batch, 1), dtype=dtype),
                rowsum=rowsum,
                rowsum_flat=xp.reshape(rowsum, (batch,)),
                loss=xp.empty((batch,), dtype=dtype),
                rows=xp.arange(batch),
            )
            self._buffers[batch] = buffers
        return buffers

    def forward(self, x: Any) -> Any:
        """Logits (B, C) of x (B, n₀); the result is a buffer the next call overwrites."""
        return self._forward(x, self._buffers_for(x.shape[0]))

    def _forward(self, x: Any, buffers: _Buffers) -> Any:
        xp, a, last = self.xp, x, len(self.weights) - 1
        for i, (W, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            z = buffers.z[i]
            xp.matmul(a, W.T, out=z)
            z += b
            if i < last:
                xp.maximum(z, 0.0, out=z)
            a = z
        return a

    def _loss_and_grad(self, x: Any, labels: Any, scale: float) -> Any:
        """Forward, loss and backward with ∂L/∂logits multiplied by ``scale`` · B."""
        xp, batch = self.xp, x.shape[0]
        buffers = self._buffers_for(batch)
        logits = self._forward(x, buffers)
        g, rows, losses = buffers.grad, buffers.rows, buffers.loss
        # ufunc reductions: np.max and np.sum add ~1 µs of argument handling to the same loop
        xp.maximum.reduce(logits, axis=1, keepdims=True, out=buffers.rowmax)
        xp.subtract(logits, buffers.rowmax, out=g)  # s = z − max z
        picked = g[rows, labels]  # s at the labels
        xp.exp(g, out=g)
        xp.add.reduce(g, axis=1, keepdims=True, out=buffers.rowsum)
        xp.log(buffers.rowsum_flat, out=losses)
        losses -= picked  # ℓₙ = log Σ_c e^{sₙc} − sₙ,yₙ
        loss = xp.add.reduce(losses) * (1.0 / batch)
        # grad = scale · (softmax − onehot): one pass divides e^s by Σe^s / scale
        buffers.rowsum *= 1.0 / scale
        g /= buffers.rowsum
        g[rows, labels] -= scale
        self._backward(x, g, buffers)
        return loss

    def _backward(self, x: Any, dz: Any, buffers: _Buffers) -> None:
        xp = self.xp
        for i in range(len(self.weights) - 1, -1, -1):
            a = x if i == 0 else buffers.z[i - 1]
            xp.matmul(dz.T, a, out=self.weight_grads[i])
            xp.add.reduce(dz, axis=0, out=self.bias_grads[i])
            if i:
                da, mask = buffers.dz[i - 1], buffers.mask[i - 1]
                xp.matmul(dz, self.weights[i], out=da)
                xp.greater(a, 0.0, out=mask)
                xp.multiply(da, mask, out=da)
                dz = da

    def loss_and_grad(self, x: Any, labels: Any) -> Any:
        """Mean cross-entropy of the batch; fills :attr:`weight_grads` and :attr:`bias_grads`."""
        return self._loss_and_grad(x, labels, 1.0 / x.shape[0])

    def train_step(self, x: Any, labels: Any) -> Any:
        """One optimizer step on the batch; returns the loss before the step."""
        if self._adam is None:
            loss = self._loss_and_grad(x, labels, self.lr / x.shape[0])
            self._theta -= self._grad
            return loss
        loss = self._loss_and_grad(x, labels, 1.0 / x.shape[0])
        self._adam_step(*self._adam)
        return loss

    def _adam_step(self, m: Any, v: Any, tmp: Any) -> None:
        """The Adam update of the flat parameters from the flat gradient (class docstring)."""
        self._step += 1
        flat_adam_update(self._theta, self._grad, m, v, tmp, step=self._step, lr=self.lr,
                         betas=self.betas, eps=self.eps, xp=self.xp)


def flat_adam_update(theta: Any, grad: Any, m: Any, v: Any, tmp: Any, *, step: int, lr: float,
                     betas: tuple[float, float], eps: float, xp: Any = np) -> None:
    """One Adam update of a flat parameter buffer in place, with scaled moments.

    ``m`` and ``v`` hold m̄ = m / (1 − β1) and v̄ = v / (1 − β2) (see :class:`NumpyMLP`),
    ``tmp`` is scratch of the same shape, ``step`` is t ≥ 1: nine passes, no temporaries.
    """
    beta1, beta2 = betas
    k = math.sqrt((1.0 - beta2) / (1.0 - beta2**step))
    step_size = lr * (1.0 - beta1) / ((1.0 - beta1**step) * k)
    m *= beta1
    m += grad
    xp.multiply(grad, grad, out=tmp)
    v *= beta2
    v += tmp
    xp.sqrt(v, out=tmp)
    tmp += eps / k
    xp.divide(m, tmp, out=tmp)
    tmp *= step_size
    theta -= tmp
