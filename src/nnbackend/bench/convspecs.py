"""What the convolutional benchmarks run: the LeNet and residual-block shapes
(:data:`CONV_SIZES`), their FLOP counts, their data and the initial weights every target starts
from (:func:`conv_parameters`), and nnbackend's model for them (:func:`build_conv_model`).

Two networks, float32, NCHW:

``lenet`` (28×28×1, batch 64), the network of ``nnbackend train --model cnn``
(:func:`nnbackend.models.lenet`), convolutions without bias (a batch normalisation follows
each)::

    conv 1→6 5×5 pad 2, BN, ReLU, 2×2 max-pool; conv 6→16 5×5, BN, ReLU, 2×2 max-pool;
    flatten (400); 400→120, ReLU, dropout 0.25; 120→84, ReLU, dropout 0.25; 84→10;
    cross-entropy

``resblock`` (32×32×16, batch 32), a ResNet basic block (He et al., 2016), convolutions
without bias as well::

    y = ReLU(x + BN(conv₃ₓ₃(ReLU(BN(conv₃ₓ₃(x))))))      (16→16 channels, pad 1)

The block is the inside of a network, so its training step computes ∂L/∂x; its backward is
seeded with a fixed cotangent g (the gradient of L = Σ g ⊙ y). LeNet's first convolution
computes no ∂L/∂x (nothing needs it).

FLOPs (:meth:`ConvSpec.flops`) count the convolutions and linear layers only, by the usual
convention: a convolution forward is 2·N·OH·OW·Cout·(Cin/groups)·kh·kw, a linear layer
2·N·nᵢ·nₒ; backward, each layer's ∂L/∂W costs its forward again, and so does its ∂L/∂x
where one is computed (every layer but LeNet's first convolution). So a training step is
about 3× the forward (exactly 3× for the residual block). Batch normalisation, pooling,
activations, the loss and the optimizer are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from ..backend import BackendUnavailableError, get_backend
from ..init import he_normal
from .specs import _check_workload

__all__ = [
    "CONV_SIZES",
    "CONV_WORKLOADS",
    "DROPOUT_P",
    "ConvShape",
    "ConvSpec",
    "build_conv_model",
    "conv_parameters",
    "make_conv_data",
]

CONV_WORKLOADS: Final = ("forward", "fwd-bwd", "train-adam")
"""The steps benchmarked on the convolutional networks (Adam, lr 1e-3, as the MLPs')."""

DROPOUT_P: Final = 0.25
"""LeNet's dropout probability after each hidden linear layer (``nnbackend.models``')."""

BN_EPS: Final = 1e-5
BN_MOMENTUM: Final = 0.1


@dataclass(frozen=True)
class ConvShape:
    """One convolution of a network: channels, square kernel, padding and input size."""

    name: str
    cin: int
    cout: int
    kernel: int
    padding: int
    height: int
    width: int
    bias: bool

    @property
    def out_hw(self) -> tuple[int, int]:
        """(OH, OW) for stride 1, dilation 1: H + 2·pad − k + 1."""
        return (self.height + 2 * self.padding - self.kernel + 1,
                self.width + 2 * self.padding - self.kernel + 1)

    def flops(self, batch: int) -> int:
        """Forward FLOPs: 2·N·OH·OW·Cout·Cin·kh·kw."""
        oh, ow = self.out_hw
        return 2 * batch * oh * ow * self.cout * self.cin * self.kernel * self.kernel


@dataclass(frozen=True)
class ConvSpec:
    """A benchmarked convolutional network and its batch size.

    Attributes
    ----------
    name : str
        ``lenet``, ``resblock`` (or their ``-tiny`` versions, for tests).
    kind : {"lenet", "resblock"}
    batch : int
        N, the batch size of the benchmark.
    channels, height, width : int
        The input image (C, H, W).
    classes : int
        LeNet's logits (0 for the residual block, which has no classifier).
    """

    name: str
    kind: str
    batch: int
    channels: int
    height: int
    width: int
    classes: int = 0

    @property
    def label(self) -> str:
        """``"28x28x1"``: the input image H×W×C."""
        return f"{self.height}x{self.width}x{self.channels}"

    @property
    def workloads(self) -> tuple[str, ...]:
        """The workloads this network is benchmarked on (:data:`CONV_WORKLOADS`)."""
        return CONV_WORKLOADS

    @property
    def input_grad(self) -> bool:
        """Whether the training step computes ∂L/∂x (the residual block's: it is inside a
        network; LeNet's first convolution has nothing to send it to)."""
        return self.kind == "resblock"

    def input_shape(self, batch: int | None = None) -> tuple[int, int, int, int]:
        """(N, C, H, W)."""
        return (batch or self.batch, self.channels, self.height, self.width)

    @property
    def convs(self) -> tuple[ConvShape, ...]:
        """The convolutions, in order."""
        c, h, w = self.channels, self.height, self.width
        if self.kind == "lenet":
            return (ConvShape("conv1", c, 6, 5, 2, h, w, False),
                    ConvShape("conv2", 6, 16, 5, 0, h // 2, w // 2, False))
        return (ConvShape("conv1", c, c, 3, 1, h, w, False),
                ConvShape("conv2", c, c, 3, 1, h, w, False))

    @property
    def linears(self) -> tuple[tuple[int, int], ...]:
        """(nᵢ, nₒ) of each linear layer (LeNet's classifier; none in the residual block)."""
        if self.kind != "lenet":
            return ()
        oh, ow = self.convs[-1].out_hw
        return ((16 * (oh // 2) * (ow // 2), 120), (120, 84), (84, self.classes))

    def flops_by_layer(self, workload: str,
                       batch: int | None = None) -> dict[str, tuple[int, int, int]]:
        """Per layer: (forward, ∂L/∂W, ∂L/∂x) FLOPs of one step of ``workload`` (zeros for
        the parts the step does not compute)."""
        _check_workload(workload)
        n = batch or self.batch
        backward = workload != "forward"
        out: dict[str, tuple[int, int, int]] = {}
        layers = [(c.name, c.flops(n)) for c in self.convs]
        layers += [(f"fc{i + 1}", 2 * n * a * b) for i, (a, b) in enumerate(self.linears)]
        for i, (name, fwd) in enumerate(layers):
            dx = fwd if backward and (i or self.input_grad) else 0
            out[name] = (fwd, fwd if backward else 0, dx)
        return out

    def flops(self, workload: str, batch: int | None = None) -> float:
        """Convolution and linear FLOPs of one step (module docstring)."""
        return float(sum(sum(v) for v in self.flops_by_layer(workload, batch).values()))


CONV_SIZES: dict[str, ConvSpec] = {
    "lenet": ConvSpec("lenet", "lenet", 64, 1, 28, 28, 10),
    "resblock": ConvSpec("resblock", "resblock", 32, 16, 32, 32),
    # for tests: the same layers at batch 2 (and a narrow, small residual block)
    "lenet-tiny": ConvSpec("lenet-tiny", "lenet", 2, 1, 28, 28, 10),
    "resblock-tiny": ConvSpec("resblock-tiny", "resblock", 2, 4, 6, 6),
}
"""The benchmarked convolutional networks by name (the ``-tiny`` ones exist for fast tests)."""

_PUBLIC_CONV_SIZES = ("lenet", "resblock")


def make_conv_data(spec: ConvSpec, batch: int | None = None, *,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One batch on the host: x ~ N(0, 1) (N, C, H, W) float32 and the target: LeNet's labels
    (N,) int64 uniform in [0, classes), the residual block's cotangent g ~ N(0, 1) of y's
    shape, float32."""
    shape = spec.input_shape(batch)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape, dtype=np.float32)
    if spec.kind == "lenet":
        return x, rng.integers(0, spec.classes, size=shape[0], dtype=np.int64)
    return x, rng.standard_normal(shape, dtype=np.float32)


def _bn_state(prefix: str, channels: int) -> dict[str, np.ndarray]:
    return {f"{prefix}.weight": np.ones(channels, np.float32),
            f"{prefix}.bias": np.zeros(channels, np.float32),
            f"{prefix}.running_mean": np.zeros(channels, np.float32),
            f"{prefix}.running_var": np.ones(channels, np.float32),
            f"{prefix}.num_batches_tracked": np.zeros((), np.int64)}


def _module_names(spec: ConvSpec) -> tuple[list[str], list[str], list[str]]:
    """State-dict prefixes of the convolutions, batch norms and linear layers, as
    ``torch.nn.Sequential`` names them (module docstring's structure)."""
    if spec.kind == "lenet":
        return ["0", "4"], ["1", "5"], ["9", "12", "15"]
    return ["0.block.0", "0.block.3"], ["0.block.1", "0.block.4"], []


def conv_parameters(spec: ConvSpec, *, seed: int = 0) -> dict[str, np.ndarray]:
    """The initial state every target starts from, under PyTorch's state-dict names.

    Convolution and linear weights He-normal (:func:`nnbackend.init.he_normal`, fan_in =
    Cin·kh·kw or nᵢ) from ``numpy.random.default_rng(seed)``, biases zero; batch norms
    γ = 1, β = 0, running mean 0, running variance 1. float32 (``num_batches_tracked`` int64).
    """
    rng = np.random.default_rng(seed)
    conv_names, bn_names, linear_names = _module_names(spec)
    state: dict[str, np.ndarray] = {}
    for name, bn, conv in zip(conv_names, bn_names, spec.convs, strict=True):
        shape = (conv.cout, conv.cin, conv.kernel, conv.kernel)
        state[f"{name}.weight"] = he_normal(shape, rng).astype(np.float32)
        if conv.bias:
            state[f"{name}.bias"] = np.zeros(conv.cout, np.float32)
        state.update(_bn_state(bn, conv.cout))
    for name, (n_in, n_out) in zip(linear_names, spec.linears, strict=True):
        state[f"{name}.weight"] = he_normal((n_out, n_in), rng).astype(np.float32)
        state[f"{name}.bias"] = np.zeros(n_out, np.float32)
    return state


def _layer(name: str) -> Any:
    """nnbackend's layer class ``name`` (a clear error while a layer does not exist yet)."""
    from .. import layers

    cls = getattr(layers, name, None)
    if cls is None:
        msg = f"nnbackend.layers has no {name}: the convolutional benchmarks need it"
        raise BackendUnavailableError(msg)
    return cls


def _nnbackend_layers(spec: ConvSpec, seed: int) -> Any:
    """The module tree of ``spec`` (before its weights are loaded)."""
    conv2d, bn2d, relu = _layer("Conv2d"), _layer("BatchNorm2d"), _layer("ReLU")
    sequential = _layer("Sequential")
    c1, c2 = spec.convs

    def conv(c: ConvShape) -> Any:
        return conv2d(c.cin, c.cout, c.kernel, padding=c.padding, bias=c.bias)

    if spec.kind == "resblock":
        block = sequential(conv(c1), bn2d(c1.cout), relu(), conv(c2), bn2d(c2.cout))
        return sequential(_layer("Residual")(block), relu())
    from ..models import lenet  # the command line's network, layer for layer

    return lenet(spec.classes, spec.channels, dropout=DROPOUT_P, seed=seed)


def build_conv_model(spec: ConvSpec, backend: Any = "numpy", *, seed: int = 0) -> Any:
    """nnbackend's network for ``spec`` on ``backend``, loaded with :func:`conv_parameters`.

    Raises
    ------
    BackendUnavailableError
        A layer the network needs is missing from this version of nnbackend.
    """
    be = get_backend(backend)
    model = _nnbackend_layers(spec, seed).to(be)
    model.load_state_dict(conv_parameters(spec, seed=seed))  # every name, as PyTorch's
    return model
