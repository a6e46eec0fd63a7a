"""The hand-written NumPy floor of the convolutional benchmarks: :class:`NumpyLeNet` and
:class:`NumpyResBlock`, the speed a NumPy library could hope for on the same math.

What makes them fast, and what a library written against the standard cannot all do:

- **Channels last.** Activations are kept (N, H, W, C), so an im2col matrix is (N·OH·OW,
  kh·kw·C) with the channels innermost, a convolution is one GEMM cols (M, K) · W (K, Cout)
  whose result *is* the next activation (no transpose), and batch normalisation reduces over
  the rows of an (M, C) matrix. The input arrives in that layout (:meth:`prepare`, once when a
  workload is built: a data pipeline can deliver either layout), and LeNet's first linear layer
  takes its 400 inputs in (h, w, c) order (its weight columns permuted once, the same function).
- **im2col as one copy** of NumPy's ``sliding_window_view`` of the padded input into a
  preallocated buffer; the padded inputs are buffers whose zero border is written once.
- **∂L/∂x of a convolution** either as col2im (dcols = δ Wᵀ, then one slice-add per kernel
  offset) or, for the residual block, as the convolution of the padded δ with the flipped
  kernel (im2col again, into the same buffer, and one GEMM): the choice measured faster for
  each network (``dx_mode``).
- **Everything preallocated**, every product ``matmul(..., out=)``; per-channel sums as GEMVs
  (1ᵀ Z) rather than reductions; ReLU after 2×2 max-pooling (max and ReLU commute, a quarter
  of the work) with the window's choice kept as three boolean masks (PyTorch's first-maximum
  rule for ties); the parameters and gradients views of two flat buffers, stepped by one flat
  Adam (:func:`flat_adam_update`); dropout masks from ``numpy.random.Generator``.

Batch normalisation (training): x̂ = (z − μ)/σ with the biased variance, σ = √(var + ε),
y = γ x̂ + β; the running mean and (unbiased) variance updated with momentum 0.1; backward
∂L/∂z = (γ/σ)(δ − mean(δ) − x̂ mean(δ x̂)). In inference (``forward``), y = z·γ/σᵣ + (β − μᵣγ/σᵣ)
from the running statistics and dropout is the identity.

``matmul`` (a keyword of both classes) is the function every convolution and linear product
goes through, ``numpy.matmul`` by default: the GEMM-share measurement passes a timing wrapper.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .convspecs import BN_EPS, BN_MOMENTUM, DROPOUT_P, ConvShape, ConvSpec
from .floor import flat_adam_update
from .specs import ADAM_LR

__all__ = ["NumpyLeNet", "NumpyResBlock"]

Matmul = Callable[..., Any]


class _Flat:
    """Parameters and gradients as views of two flat buffers (for one flat optimizer)."""

    def __init__(self, arrays: list[np.ndarray]) -> None:
        dtype = arrays[0].dtype
        self.theta = np.concatenate([a.ravel() for a in arrays]).astype(dtype, copy=False)
        self.grad = np.zeros_like(self.theta)
        self.params: list[np.ndarray] = []
        self.grads: list[np.ndarray] = []
        offset = 0
        for a in arrays:
            self.params.append(self.theta[offset:offset + a.size].reshape(a.shape))
            self.grads.append(self.grad[offset:offset + a.size].reshape(a.shape))
            offset += a.size


class _Adam:
    """PyTorch's Adam (no weight decay) on a :class:`_Flat`, as the MLP floor's."""

    def __init__(self, flat: _Flat, lr: float, betas: tuple[float, float], eps: float) -> None:
        self.flat, self.lr, self.betas, self.eps = flat, lr, betas, eps
        self.m, self.v = np.zeros_like(flat.theta), np.zeros_like(flat.theta)
        self.tmp = np.empty_like(flat.theta)
        self.t = 0

    def step(self) -> None:
        self.t += 1
        flat_adam_update(self.flat.theta, self.flat.grad, self.m, self.v, self.tmp,
                         step=self.t, lr=self.lr, betas=self.betas, eps=self.eps)


def _conv_weight_to_floor(w: np.ndarray) -> np.ndarray:
    """(Cout, Cin, kh, kw) → (kh·kw·Cin, Cout), rows in (i, j, c) order."""
    cout = w.shape[0]
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(-1, cout))


def _conv_weight_from_floor(w: np.ndarray, shape: ConvShape) -> np.ndarray:
    k = shape.kernel
    return np.ascontiguousarray(w.reshape(k, k, shape.cin, shape.cout).transpose(3, 2, 0, 1))


class _Conv:
    """A stride-1 convolution in channels-last layout (module docstring).

    ``src`` is where the previous layer writes this layer's input (N, H, W, Cin): the interior
    of the zero-padded buffer when there is padding. The im2col matrix (M, K) has its K axis
    in (i, j, c) order; with one input channel it is stored K-major, (k, k, N, OH, OW), so the
    copy runs along OW instead of along five-element kernel rows (the product takes the
    transposed view). ``dx_mode="col2im"`` computes δ W_ijᵀ for every kernel offset in one
    batched product, (k·k, M, Cin), whose slices add into the padded gradient with the whole
    (OW, Cin) plane contiguous; ``"flip"`` convolves the padded δ with the flipped kernel.
    """

    def __init__(self, shape: ConvShape, batch: int, w: np.ndarray, b: np.ndarray | None,
                 gw: np.ndarray, gb: np.ndarray | None, *, input_grad: bool, dx_mode: str,
                 matmul: Matmul, dtype: Any) -> None:
        self.shape, self.w, self.b, self.gw, self.gb = shape, w, b, gw, gb
        self.mm, self.input_grad, self.dx_mode = matmul, input_grad, dx_mode
        k, p, (oh, ow) = shape.kernel, shape.padding, shape.out_hw
        n, h, wd, cin, cout = batch, shape.height, shape.width, shape.cin, shape.cout
        self.m = n * oh * ow
        self.padded = np.zeros((n, h + 2 * p, wd + 2 * p, cin), dtype)
        self.src = self.padded[:, p:p + h, p:p + wd, :]
        self.k_major = cin == 1
        if self.k_major:
            self.cols6 = np.empty((k, k, cin, n, oh, ow), dtype)
            self.cols = self.cols6.reshape(k * k * cin, self.m).T
        else:
            self.cols6 = np.empty((n, oh, ow, k, k, cin), dtype)
            self.cols = self.cols6.reshape(self.m, k * k * cin)
        self.z = np.empty((self.m, cout), dtype)
        self.ones = np.ones(self.m, dtype)
        if not input_grad:
            return
        if dx_mode == "flip":  # ∂L/∂x = conv(pad(δ, k−1−p), flip(W)ᵀ), in the cols buffer
            q = k - 1 - p
            if (oh + 2 * q - k + 1, ow + 2 * q - k + 1) != (h, wd) or cin != cout:
                msg = f"_Conv: dx_mode 'flip' needs Cin = Cout and a size-keeping padding ({shape})"
                raise ValueError(msg)
            self.dpad = np.zeros((n, oh + 2 * q, ow + 2 * q, cout), dtype)
            self.dsrc = self.dpad[:, q:q + oh, q:q + ow, :]
            self.wflip = np.empty((k * k * cout, cin), dtype)
            self.dx = np.empty((n, h, wd, cin), dtype)
        else:  # col2im: δ W_ijᵀ for every offset (i, j) in one product, then slice-adds
            self.w_offsets = np.empty((k * k, cout, cin), dtype)
            self.dcols = np.empty((k * k, self.m, cin), dtype)
            self.dpadded = np.zeros_like(self.padded)
            self.dx_view = self.dpadded[:, p:p + h, p:p + wd, :]

    def _im2col(self, padded: np.ndarray) -> None:
        k = self.shape.kernel
        windows = sliding_window_view(padded, (k, k), axis=(1, 2))  # (N, OH, OW, C, k, k)
        order = (4, 5, 3, 0, 1, 2) if self.k_major else (0, 1, 2, 4, 5, 3)
        np.copyto(self.cols6, windows.transpose(order))

    def forward(self) -> np.ndarray:
        """z = im2col(x) W (+ b), (M, Cout), from the input written into :attr:`src`."""
        self._im2col(self.padded)
        self.mm(self.cols, self.w, out=self.z)
        if self.b is not None:
            self.z += self.b
        return self.z

    def backward(self, dz: np.ndarray) -> np.ndarray | None:
        """∂L/∂W, ∂L/∂b into the gradient views; returns ∂L/∂x (N, H, W, Cin) or None."""
        self.mm(self.cols.T, dz, out=self.gw)
        if self.gb is not None:
            np.matmul(self.ones, dz, out=self.gb)
        if not self.input_grad:
            return None
        s, k = self.shape, self.shape.kernel
        oh, ow = s.out_hw
        w4 = self.w.reshape(k, k, s.cin, s.cout)  # rebuilt from W each step (W moves)
        if self.dx_mode == "flip":
            # flip(W)[(i, j, co), ci] = W[(k−1−i, k−1−j, ci), co]
            np.copyto(self.wflip.reshape(k, k, s.cout, s.cin),
                      w4[::-1, ::-1].transpose(0, 1, 3, 2))
            np.copyto(self.dsrc, dz.reshape(self.dsrc.shape))
            self._im2col(self.dpad)  # the forward's columns are used up
            self.mm(self.cols, self.wflip, out=self.dx.reshape(-1, s.cin))
            return self.dx
        np.copyto(self.w_offsets.reshape(k, k, s.cout, s.cin), w4.transpose(0, 1, 3, 2))
        self.mm(dz[None], self.w_offsets, out=self.dcols)
        self.dpadded.fill(0.0)
        planes = self.dcols.reshape(k, k, -1, oh, ow, s.cin)
        for i in range(k):
            for j in range(k):
                self.dpadded[:, i:i + oh, j:j + ow, :] += planes[i, j]
        return self.dx_view


class _BatchNorm:
    """Batch normalisation over the rows of (M, C) (module docstring).

    NumPy runs an (M, C) ⊙ (C,) broadcast with an inner loop of C elements, slow for few
    channels: the elementwise passes work on the (M / P, P·C) view with the per-channel
    vectors tiled P times (P: the rows of one image), an inner loop of P·C.
    """

    def __init__(self, m: int, period: int, gamma: np.ndarray, beta: np.ndarray,
                 ggamma: np.ndarray, gbeta: np.ndarray, running_mean: np.ndarray,
                 running_var: np.ndarray, dtype: Any) -> None:
        c = gamma.shape[0]
        self.m, self.period = m, period
        self.gamma, self.beta, self.ggamma, self.gbeta = gamma, beta, ggamma, gbeta
        self.running_mean, self.running_var = running_mean, running_var
        self.ones = np.ones(m, dtype)
        self.xc = np.empty((m, c), dtype)  # z − μ
        self.tmp = np.empty((m, c), dtype)
        self.inv_std = np.empty(c, dtype)
        self.scale = np.empty(c, dtype)  # γ/σ
        self.dz = np.empty((m, c), dtype)

    def _wide(self, a: np.ndarray) -> np.ndarray:
        """The (M / P, P·C) view of an (M, C) array."""
        return a.reshape(-1, self.period * a.shape[-1])

    def _tile(self, v: np.ndarray) -> np.ndarray:
        return np.tile(v, self.period)

    def forward(self, z: np.ndarray, out: np.ndarray) -> None:
        """Training: y = γ (z − μ)/σ + β into ``out`` (M, C); updates the running statistics."""
        mean = np.matmul(self.ones, z) * (1.0 / self.m)
        np.subtract(self._wide(z), self._tile(mean), out=self._wide(self.xc))
        np.multiply(self.xc, self.xc, out=self.tmp)
        var = np.matmul(self.ones, self.tmp) * (1.0 / self.m)
        np.sqrt(var + BN_EPS, out=self.inv_std)
        np.divide(1.0, self.inv_std, out=self.inv_std)
        np.multiply(self.gamma, self.inv_std, out=self.scale)
        wide = self._wide(out)
        np.multiply(self._wide(self.xc), self._tile(self.scale), out=wide)
        wide += self._tile(self.beta)
        self.running_mean *= 1.0 - BN_MOMENTUM
        self.running_mean += BN_MOMENTUM * mean
        self.running_var *= 1.0 - BN_MOMENTUM
        self.running_var += (BN_MOMENTUM * self.m / (self.m - 1)) * var

    def infer(self, z: np.ndarray, out: np.ndarray) -> None:
        """Inference with the running statistics, into ``out``."""
        scale = self.gamma / np.sqrt(self.running_var + BN_EPS)
        wide = self._wide(out)
        np.multiply(self._wide(z), self._tile(scale), out=wide)
        wide += self._tile(self.beta - self.running_mean * scale)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """∂L/∂z (M, C) from ∂L/∂y; ∂L/∂γ = Σ δ x̂ and ∂L/∂β = Σ δ into the gradient views."""
        np.matmul(self.ones, dy, out=self.gbeta)
        np.multiply(dy, self.xc, out=self.tmp)
        np.matmul(self.ones, self.tmp, out=self.ggamma)
        self.ggamma *= self.inv_std
        # ∂L/∂z = scale δ − scale/M Σδ − xc · scale/σ · (Σ δ x̂)/M
        c1 = self.scale * self.inv_std * self.ggamma * (-1.0 / self.m)
        c2 = self.scale * self.gbeta * (-1.0 / self.m)
        dz, tmp = self._wide(self.dz), self._wide(self.tmp)
        np.multiply(self._wide(self.xc), self._tile(c1), out=dz)
        dz += self._tile(c2)
        np.multiply(self._wide(dy), self._tile(self.scale), out=tmp)
        dz += tmp
        return self.dz


class _PoolReLU:
    """ReLU(2×2 max-pool(y)) on (N, H, W, C), H and W even; backward to ∂L/∂y."""

    def __init__(self, n: int, h: int, w: int, c: int, dtype: Any) -> None:
        q = (n, h // 2, w // 2, c)
        self.out = np.empty(q, dtype)
        self.bottom = np.empty(q, dtype)
        self.first_in_top = np.empty(q, bool)  # a ≥ b
        self.first_in_bottom = np.empty(q, bool)  # c ≥ d
        self.top_wins = np.empty(q, bool)  # max(a, b) ≥ max(c, d)
        self.positive = np.empty(q, bool)
        self.gtop = np.empty(q, dtype)
        self.dy = np.empty((n, h, w, c), dtype)

    def forward(self, y: np.ndarray, *, training: bool = True) -> np.ndarray:
        a, b = y[:, 0::2, 0::2], y[:, 0::2, 1::2]
        c, d = y[:, 1::2, 0::2], y[:, 1::2, 1::2]
        out, bottom = self.out, self.bottom
        np.maximum(a, b, out=out)
        np.maximum(c, d, out=bottom)
        if training:  # PyTorch's rule: the first maximum in the window's row-major order
            np.greater_equal(a, b, out=self.first_in_top)
            np.greater_equal(c, d, out=self.first_in_bottom)
            np.greater_equal(out, bottom, out=self.top_wins)
        np.maximum(out, bottom, out=out)
        np.maximum(out, 0.0, out=out)
        if training:
            np.greater(out, 0.0, out=self.positive)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dy, gtop, gbottom = self.dy, self.gtop, self.bottom  # the bottom maxima are used up
        np.multiply(dout, self.positive, out=gbottom)
        np.multiply(gbottom, self.top_wins, out=gtop)
        gbottom -= gtop
        a, b = dy[:, 0::2, 0::2], dy[:, 0::2, 1::2]
        c, d = dy[:, 1::2, 0::2], dy[:, 1::2, 1::2]
        np.multiply(gtop, self.first_in_top, out=a)
        np.subtract(gtop, a, out=b)
        np.multiply(gbottom, self.first_in_bottom, out=c)
        np.subtract(gbottom, c, out=d)
        return dy


def _check_state(state: Mapping[str, np.ndarray], names: list[str], where: str) -> Any:
    missing = [n for n in names if n not in state]
    if missing:
        msg = f"{where}: the state has no {', '.join(missing)}"
        raise KeyError(msg)
    return np.asarray(state[names[0]]).dtype


class _FloorNetwork:
    """What both floor networks share: their state and gradients under PyTorch's names, from
    the flat buffers (``_torch_arrays`` maps the floor's layouts to PyTorch's)."""

    _BN: tuple[str, ...]
    flat: _Flat
    bns: list[_BatchNorm]

    def _torch_arrays(self, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and running statistics under PyTorch's names and layouts (copies)."""
        out = self._torch_arrays(self.flat.params)
        for prefix, bn in zip(self._BN, self.bns, strict=True):
            out[f"{prefix}.running_mean"] = bn.running_mean.copy()
            out[f"{prefix}.running_var"] = bn.running_var.copy()
        return out

    def gradients(self) -> dict[str, np.ndarray]:
        """The last backward pass's gradients under PyTorch's names and layouts."""
        return self._torch_arrays(self.flat.grads)


class NumpyLeNet(_FloorNetwork):
    """LeNet (:mod:`nnbackend.bench.convspecs`) in hand-written NumPy: the floor.

    Parameters
    ----------
    spec : ConvSpec
        A ``lenet`` spec: its batch size is the one the buffers are made for.
    state : mapping
        PyTorch-named initial state (:func:`conv_parameters`), copied; its dtype is the model's.
    lr, betas, eps : Adam's settings (PyTorch's defaults, lr :data:`ADAM_LR`).
    dropout_p : float
    seed : int
        Seed of the dropout masks' ``numpy.random.Generator``.
    matmul : callable
        ``matmul(a, b, out=)`` for the convolution and linear products (module docstring).
    """

    _CONV, _BN, _FC = ("0", "4"), ("1", "5"), ("9", "12", "15")

    def __init__(self, spec: ConvSpec, state: Mapping[str, np.ndarray], *,
                 lr: float = ADAM_LR, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, dropout_p: float = DROPOUT_P, seed: int = 0,
                 matmul: Matmul = np.matmul) -> None:
        if spec.kind != "lenet":
            msg = f"NumpyLeNet: needs a lenet spec, got {spec.name!r}"
            raise ValueError(msg)
        names = [f"{p}.weight" for p in self._CONV]
        names += [f"{p}.{w}" for p in self._FC + self._BN for w in ("weight", "bias")]
        dtype = _check_state(state, names, "NumpyLeNet")
        self.spec, self.mm, self.dropout_p = spec, matmul, dropout_p
        self.rng = np.random.default_rng(seed)
        n, convs = spec.batch, spec.convs
        pools = [(c.out_hw, c.cout) for c in convs]
        (_, h2), c2 = pools[1]
        self._fc1_hwc = (h2 // 2, h2 // 2, c2)
        arrays: dict[str, np.ndarray] = {}  # PyTorch's names, the floor's layouts
        for prefix in self._CONV:
            w = np.asarray(state[f"{prefix}.weight"])
            arrays[f"{prefix}.weight"] = _conv_weight_to_floor(w)
            if f"{prefix}.bias" in state:  # optional: a batch norm follows
                arrays[f"{prefix}.bias"] = np.asarray(state[f"{prefix}.bias"])
        for prefix in self._BN:
            arrays[f"{prefix}.weight"] = np.asarray(state[f"{prefix}.weight"])
            arrays[f"{prefix}.bias"] = np.asarray(state[f"{prefix}.bias"])
        for i, prefix in enumerate(self._FC):
            w = np.asarray(state[f"{prefix}.weight"])
            if i == 0:  # columns from (c, h, w) to (h, w, c) order: the flatten of NHWC
                w = w.reshape(w.shape[0], c2, *self._fc1_hwc[:2]).transpose(0, 2, 3, 1)
            arrays[f"{prefix}.weight"] = np.ascontiguousarray(w.reshape(w.shape[0], -1).T)
            arrays[f"{prefix}.bias"] = np.asarray(state[f"{prefix}.bias"])
        self._names = list(arrays)
        self.flat = _Flat([np.asarray(a, dtype) for a in arrays.values()])
        P = dict(zip(self._names, self.flat.params, strict=True))
        G = dict(zip(self._names, self.flat.grads, strict=True))
        self.convs = [_Conv(s, n, P[f"{c}.weight"], P.get(f"{c}.bias"), G[f"{c}.weight"],
                            G.get(f"{c}.bias"), input_grad=i > 0, dx_mode="col2im",
                            matmul=matmul, dtype=dtype)
                      for i, (s, c) in enumerate(zip(convs, self._CONV, strict=True))]
        self.bns = [_BatchNorm(conv.m, math.prod(s.out_hw), P[f"{b}.weight"], P[f"{b}.bias"],
                               G[f"{b}.weight"], G[f"{b}.bias"],
                               np.array(state.get(f"{b}.running_mean", np.zeros(s.cout)), dtype),
                               np.array(state.get(f"{b}.running_var", np.ones(s.cout)), dtype),
                               dtype)
                    for conv, s, b in zip(self.convs, convs, self._BN, strict=True)]
        self.pools = [_PoolReLU(n, oh, ow, c, dtype) for (oh, ow), c in pools]
        self.bn_out = [np.empty_like(conv.z) for conv in self.convs]
        self.fc_w = [P[f"{f}.weight"] for f in self._FC]
        self.fc_b = [P[f"{f}.bias"] for f in self._FC]
        self.fc_gw = [G[f"{f}.weight"] for f in self._FC]
        self.fc_gb = [G[f"{f}.bias"] for f in self._FC]
        widths = [w.shape[1] for w in self.fc_w]
        self.h = [np.empty((n, c), dtype) for c in widths]
        self.keep = [np.empty((n, c), bool) for c in widths[:-1]]
        self.mask = [np.empty((n, c), dtype) for c in widths[:-1]]
        self.uniform = [np.empty((n, c), dtype) for c in widths[:-1]]
        self.dh = [np.empty((n, c), dtype) for c in widths[:-1]]
        self.dflat = np.empty((n, self.fc_w[0].shape[0]), dtype)
        self.ones = np.ones(n, dtype)
        self.rows = np.arange(n)
        self.rowmax = np.empty((n, 1), dtype)
        self.rowsum = np.empty((n, 1), dtype)
        self.losses = np.empty(n, dtype)
        self.adam = _Adam(self.flat, lr, betas, eps)

    @staticmethod
    def prepare(x: np.ndarray) -> np.ndarray:
        """The floor's layout (N, H, W, C) of an (N, C, H, W) batch (a copy)."""
        return np.ascontiguousarray(np.asarray(x).transpose(0, 2, 3, 1))

    def _features(self, x: np.ndarray, training: bool) -> np.ndarray:
        """conv-BN-ReLU-pool twice: the flattened features (N, 400), in (h, w, c) order."""
        src = x
        for conv, bn, pool, out in zip(self.convs, self.bns, self.pools, self.bn_out,
                                       strict=True):
            np.copyto(conv.src, src)
            z = conv.forward()
            if training:
                bn.forward(z, out)
            else:
                bn.infer(z, out)
            s = conv.shape
            oh, ow = s.out_hw
            src = pool.forward(out.reshape(-1, oh, ow, s.cout), training=training)
        return src.reshape(src.shape[0], -1)

    def _classifier(self, a: np.ndarray, training: bool) -> np.ndarray:
        last = len(self.fc_w) - 1
        for i, (w, b, h) in enumerate(zip(self.fc_w, self.fc_b, self.h, strict=True)):
            self.mm(a, w, out=h)
            h += b
            if i < last:
                np.maximum(h, 0.0, out=h)
                if training and self.dropout_p > 0.0:
                    self.rng.random(out=self.uniform[i], dtype=self.uniform[i].dtype)
                    np.greater_equal(self.uniform[i], self.dropout_p, out=self.keep[i])
                    np.multiply(self.keep[i], 1.0 / (1.0 - self.dropout_p), out=self.mask[i])
                    h *= self.mask[i]
            a = h
        return a

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Inference logits (N, classes) of a prepared batch (a buffer the next call reuses)."""
        return self._classifier(self._features(x, False), False)

    def loss_and_grad(self, x: np.ndarray, labels: np.ndarray) -> Any:
        """Training forward, mean cross-entropy and backward into the gradient views."""
        logits = self._classifier(self._features(x, True), True)
        n = logits.shape[0]
        g = logits  # turned into ∂L/∂logits in place
        np.maximum.reduce(logits, axis=1, keepdims=True, out=self.rowmax)
        g -= self.rowmax
        picked = g[self.rows, labels]
        np.exp(g, out=g)
        np.add.reduce(g, axis=1, keepdims=True, out=self.rowsum)
        np.log(self.rowsum.reshape(n), out=self.losses)
        self.losses -= picked
        loss = np.add.reduce(self.losses) * (1.0 / n)
        self.rowsum *= n
        g /= self.rowsum
        g[self.rows, labels] -= 1.0 / n
        self._backward(g)
        return loss

    def _backward(self, delta: np.ndarray) -> None:
        d = self._classifier_backward(delta)
        for conv, bn, pool in zip(self.convs[::-1], self.bns[::-1], self.pools[::-1],
                                  strict=True):
            dy = pool.backward(d)
            dz = bn.backward(dy.reshape(conv.z.shape))
            dx = conv.backward(dz)
            if dx is not None:
                d = dx

    def _classifier_backward(self, delta: np.ndarray) -> np.ndarray:
        """The linear layers' gradients; returns ∂L/∂(pooled features) (N, h, w, c)."""
        for i in range(len(self.fc_w) - 1, -1, -1):
            a = self.h[i - 1] if i else self.pools[-1].out.reshape(delta.shape[0], -1)
            self.mm(a.T, delta, out=self.fc_gw[i])
            np.matmul(self.ones, delta, out=self.fc_gb[i])
            da = self.dh[i - 1] if i else self.dflat
            self.mm(delta, self.fc_w[i].T, out=da)
            if i:
                if self.dropout_p > 0.0:
                    np.multiply(da, self.mask[i - 1], out=da)  # dropout (its scale included)
                np.greater(a, 0.0, out=self.keep[i - 1])
                np.multiply(da, self.keep[i - 1], out=da)  # ReLU
            delta = da
        out: np.ndarray = delta.reshape(self.pools[-1].out.shape)
        return out

    def train_step(self, x: np.ndarray, labels: np.ndarray) -> Any:
        """One Adam step on a prepared batch; returns the loss before the step."""
        loss = self.loss_and_grad(x, labels)
        self.adam.step()
        return loss

    def _torch_arrays(self, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
        """The flat buffer's views (parameters or gradients) in PyTorch's layouts (copies)."""
        out = {name: a.copy() for name, a in zip(self._names, arrays, strict=True)}
        for prefix, shape in zip(self._CONV, self.spec.convs, strict=True):
            out[f"{prefix}.weight"] = _conv_weight_from_floor(out[f"{prefix}.weight"], shape)
        for i, prefix in enumerate(self._FC):
            w = out[f"{prefix}.weight"].T
            if i == 0:
                hh, ww, c = self._fc1_hwc
                w = w.reshape(-1, hh, ww, c).transpose(0, 3, 1, 2).reshape(w.shape[0], -1)
            out[f"{prefix}.weight"] = np.ascontiguousarray(w)
        return out



class NumpyResBlock(_FloorNetwork):
    """The residual block (:mod:`nnbackend.bench.convspecs`) in hand-written NumPy: the floor.

    Parameters as :class:`NumpyLeNet`'s (``dx_mode`` for both convolutions, default
    ``"flip"``), without dropout. ``forward_backward(x, g)`` runs the training forward and the
    backward seeded with the cotangent g (both prepared), returning ∂L/∂x (N, H, W, C).
    """

    _CONV, _BN = ("0.block.0", "0.block.3"), ("0.block.1", "0.block.4")

    def __init__(self, spec: ConvSpec, state: Mapping[str, np.ndarray], *,
                 lr: float = ADAM_LR, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, matmul: Matmul = np.matmul,
                 dx_mode: str = "flip") -> None:
        if spec.kind != "resblock":
            msg = f"NumpyResBlock: needs a resblock spec, got {spec.name!r}"
            raise ValueError(msg)
        names = [f"{p}.weight" for p in self._CONV]
        names += [f"{p}.{w}" for p in self._BN for w in ("weight", "bias")]
        dtype = _check_state(state, names, "NumpyResBlock")
        self.spec = spec
        n, convs = spec.batch, spec.convs
        arrays = [_conv_weight_to_floor(np.asarray(state[f"{p}.weight"])) for p in self._CONV]
        for prefix in self._BN:
            arrays += [np.asarray(state[f"{prefix}.weight"]), np.asarray(state[f"{prefix}.bias"])]
        self.flat = _Flat([np.asarray(a, dtype) for a in arrays])
        P, G = self.flat.params, self.flat.grads
        self.convs = [_Conv(s, n, P[i], None, G[i], None, input_grad=True, dx_mode=dx_mode,
                            matmul=matmul, dtype=dtype) for i, s in enumerate(convs)]
        c = spec.channels
        self.bns = [_BatchNorm(conv.m, spec.height * spec.width, P[2 + 2 * i], P[3 + 2 * i],
                               G[2 + 2 * i], G[3 + 2 * i],
                               np.array(state.get(f"{prefix}.running_mean", np.zeros(c)), dtype),
                               np.array(state.get(f"{prefix}.running_var", np.ones(c)), dtype),
                               dtype)
                    for i, (conv, prefix) in enumerate(zip(self.convs, self._BN, strict=True))]
        shape4 = (n, spec.height, spec.width, c)
        self.y = np.empty(shape4, dtype)
        self.h_positive = np.empty(shape4, bool)
        self.y_positive = np.empty(shape4, bool)
        self.dy = np.empty(shape4, dtype)
        self.dx = np.empty(shape4, dtype)
        self.adam = _Adam(self.flat, lr, betas, eps)

    prepare = staticmethod(NumpyLeNet.prepare)

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        first, second = self.convs
        bn1, bn2 = self.bns
        np.copyto(first.src, x)
        z = first.forward()
        h = second.src  # BN and ReLU write straight into the second convolution's input
        out = self.y.reshape(z.shape)
        if training:
            bn1.forward(z, out)
        else:
            bn1.infer(z, out)
        np.maximum(self.y, 0.0, out=h)
        if training:
            np.greater(self.y, 0.0, out=self.h_positive)
        z = second.forward()
        if training:
            bn2.forward(z, out)
        else:
            bn2.infer(z, out)
        self.y += x
        np.maximum(self.y, 0.0, out=self.y)
        return self.y

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Inference output (N, H, W, C) of a prepared batch (a buffer the next call reuses)."""
        return self._forward(x, False)

    def forward_backward(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        """Training forward, then backward from ∂L/∂y = g; returns ∂L/∂x."""
        y = self._forward(x, True)
        np.greater(y, 0.0, out=self.y_positive)
        np.multiply(g, self.y_positive, out=self.dy)  # ∂L/∂(x + f(x))
        first, second = self.convs
        bn1, bn2 = self.bns
        dz = bn2.backward(self.dy.reshape(second.z.shape))
        dh = second.backward(dz)
        assert dh is not None
        np.multiply(dh, self.h_positive, out=dh)
        dz = bn1.backward(dh.reshape(first.z.shape))
        dx = first.backward(dz)
        assert dx is not None
        np.add(dx, self.dy, out=self.dx)
        return self.dx

    def train_step(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        """One Adam step (prepared batch and cotangent); returns ∂L/∂x."""
        dx = self.forward_backward(x, g)
        self.adam.step()
        return dx

    def _torch_arrays(self, arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
        out = {f"{p}.weight": _conv_weight_from_floor(arrays[i], s)
               for i, (p, s) in enumerate(zip(self._CONV, self.spec.convs, strict=True))}
        for i, prefix in enumerate(self._BN):
            out[f"{prefix}.weight"] = arrays[2 + 2 * i].copy()
            out[f"{prefix}.bias"] = arrays[3 + 2 * i].copy()
        return out

