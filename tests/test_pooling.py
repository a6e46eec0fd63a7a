"""Pooling (functional and layers) against PyTorch autograd in float64, on every backend.

Forward values and ∂L/∂x for a table of max, average and adaptive average pooling cases
(kernels 1–5, strides 1–3, padding, dilation, ceil_mode, count_include_pad, divisor_override,
overlapping windows, odd sizes, batch 1, unbatched inputs, adaptive sizes that do not divide);
max pooling's choice among ties, NaNs and all −∞ windows as PyTorch's CPU kernel makes it;
finite differences for each layer; no host reads on the GPU-like device; the layers in
Sequential (first layer, no ∂L/∂x), described and rebuilt; bad arguments and inputs refused
with messages naming the function or layer and the shapes.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import nnbackend as nb
from nnbackend import functional as F
from nnbackend.functional import pooling as P
from nnbackend.layers.shape import LayerInputError
from nnbackend.testing import count_host_reads

# (name, input shape, keyword arguments): name picks the functions below.
CASES: list[tuple[str, tuple[int, ...], dict[str, Any]]] = [
    ("max_pool2d", (2, 3, 8, 8), {"kernel_size": 2}),
    ("max_pool2d", (1, 2, 7, 9), {"kernel_size": 2, "ceil_mode": True}),
    ("max_pool2d", (2, 2, 9, 8), {"kernel_size": 3, "stride": 2, "padding": 1}),
    ("max_pool2d", (2, 2, 9, 8), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    ("max_pool2d", (2, 2, 10, 9), {"kernel_size": (2, 3), "stride": (3, 1), "padding": (1, 0),
                                   "dilation": (2, 1)}),
    ("max_pool2d", (1, 2, 11, 11), {"kernel_size": 3, "stride": 3, "padding": 1, "dilation": 2,
                                    "ceil_mode": True}),
    ("max_pool2d", (1, 1, 5, 6), {"kernel_size": 1, "stride": 2}),
    ("max_pool2d", (3, 5, 6), {"kernel_size": 2, "stride": 1}),
    ("max_pool1d", (2, 3, 10), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    ("max_pool1d", (3, 11), {"kernel_size": 5, "stride": 1, "padding": 2, "dilation": 2}),
    ("avg_pool2d", (2, 3, 8, 8), {"kernel_size": 2}),
    ("avg_pool2d", (2, 2, 7, 9), {"kernel_size": 3, "stride": 2, "padding": 1}),
    ("avg_pool2d", (2, 2, 8, 7), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
                                  "count_include_pad": False}),
    ("avg_pool2d", (1, 2, 6, 6), {"kernel_size": 2, "stride": 1, "padding": 1,
                                  "divisor_override": 3}),
    ("avg_pool2d", (3, 6, 7), {"kernel_size": (1, 3), "stride": (2, 1), "ceil_mode": True}),
    ("avg_pool1d", (2, 3, 9), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
                               "count_include_pad": False}),
    ("adaptive_avg_pool2d", (2, 3, 7, 10), {"output_size": (3, 4)}),
    ("adaptive_avg_pool2d", (1, 2, 5, 5), {"output_size": 5}),
    ("adaptive_avg_pool2d", (2, 3, 6, 9), {"output_size": 1}),
    ("adaptive_avg_pool2d", (3, 8, 7), {"output_size": (4, None)}),
    ("adaptive_avg_pool2d", (2, 1, 5, 7), {"output_size": (7, 2)}),
]

FORWARD: dict[str, Callable[..., tuple[Any, Any]]] = {
    "max_pool1d": F.max_pool1d_forward, "max_pool2d": F.max_pool2d_forward,
    "avg_pool1d": F.avg_pool1d_forward, "avg_pool2d": F.avg_pool2d_forward,
    "adaptive_avg_pool2d": F.adaptive_avg_pool2d_forward,
}
PLAIN: dict[str, Callable[..., Any]] = {
    "max_pool1d": F.max_pool1d, "max_pool2d": F.max_pool2d, "avg_pool1d": F.avg_pool1d,
    "avg_pool2d": F.avg_pool2d, "adaptive_avg_pool2d": F.adaptive_avg_pool2d,
}
BACKWARD: dict[str, Callable[..., Any]] = {
    "max_pool1d": F.max_pool1d_backward, "max_pool2d": F.max_pool2d_backward,
    "avg_pool1d": F.avg_pool1d_backward, "avg_pool2d": F.avg_pool2d_backward,
    "adaptive_avg_pool2d": F.adaptive_avg_pool2d_backward,
}


# JAX compiles each kernel anew for every geometry (~0.2-0.5 s each here), so its row runs a
# subset that covers its code paths (the immutable updates: assigned and accumulated slices, the
# −∞ corrections at padded edges, a divisor array, global average pooling's one sum, the
# adaptive matrices, 1-d pooling); every other row runs everything.
JAX_CASES = (0, 3, 8, 12, 16, 18)
JAX_TIES = ("repeated values, overlapping", "all -inf, padded and dilated",
            "NaNs, overlapping and padded")
JAX_LAYERS = ("max2d-overlap-ceil", "adaptive")


def _jax_covers(case: Any, name: object, subset: tuple[object, ...]) -> None:
    if case.id.startswith("jax-cpu") and name not in subset:
        pytest.skip(f"JAX runs a covering subset of this table: {subset}")


def _case_id(entry: tuple[str, tuple[int, ...], dict[str, Any]]) -> str:
    name, shape, kwargs = entry
    args = ",".join(f"{k}={v}" for k, v in kwargs.items()).replace(" ", "")
    return f"{name}{list(shape)}{args}".replace(" ", "")


def _torch(name: str, x: np.ndarray, dy: np.ndarray | None, kwargs: dict[str, Any]
           ) -> tuple[np.ndarray, np.ndarray | None]:
    """PyTorch's y and ∂L/∂x (autograd, float64) for the host values x, cotangent dy."""
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = getattr(TF, name)(t, **kwargs)
    if dy is None:
        return y.detach().numpy(), None
    y.backward(torch.tensor(dy, dtype=torch.float64))
    assert t.grad is not None
    return y.detach().numpy(), t.grad.numpy()


def _tolerances(case: Any) -> dict[str, float]:
    return {"rtol": 1e-10, "atol": 1e-12} if case.is_float64 else {"rtol": 2e-5, "atol": 2e-6}


def _host(case: Any, x: np.ndarray) -> np.ndarray:
    """The values the case's dtype holds (float32 rows compare against rounded inputs)."""
    return x.astype(case.dtype_name).astype(np.float64)


@pytest.mark.parametrize("entry", CASES, ids=_case_id)
def test_forward_and_gradient_match_pytorch(case: Any, entry: Any) -> None:
    _jax_covers(case, CASES.index(entry), JAX_CASES)
    name, shape, kwargs = entry
    rng = np.random.default_rng(zlib.crc32(_case_id(entry).encode()))  # the same in every run
    x = _host(case, rng.standard_normal(shape))
    want_y, _ = _torch(name, x, None, kwargs)
    dy = _host(case, rng.standard_normal(want_y.shape))
    want_y, want_dx = _torch(name, x, dy, kwargs)
    xs = case.asarray(x)
    y, saved = FORWARD[name](xs, **kwargs)
    case.check_placement(y)
    assert tuple(y.shape) == want_y.shape
    np.testing.assert_allclose(case.backend.to_numpy(y), want_y, **_tolerances(case))
    np.testing.assert_allclose(case.backend.to_numpy(PLAIN[name](xs, **kwargs)), want_y,
                               **_tolerances(case))
    dx = BACKWARD[name](case.asarray(dy), saved)
    case.check_placement(dx)
    assert tuple(dx.shape) == shape
    np.testing.assert_allclose(case.backend.to_numpy(dx), want_dx, **_tolerances(case))


# --------------------------------------------------------------------------------------------
# Max pooling's choice: ties, NaN, −∞


TIES: list[tuple[str, np.ndarray, dict[str, Any]]] = [
    ("all equal, overlapping, padded", np.full((1, 1, 5, 5), -1.0),
     {"kernel_size": 3, "stride": 1, "padding": 1}),
    ("all zero (a ReLU's dead region), ceil", np.zeros((2, 1, 5, 7)),
     {"kernel_size": 2, "ceil_mode": True}),
    ("repeated values", np.array([[[[1, 3, 3, 1], [3, 1, 1, 3], [2, 2, 2, 2], [0, 2, 2, 0]]]],
                                 dtype=float), {"kernel_size": 2}),
    ("repeated values, overlapping", np.random.default_rng(3).integers(0, 3, (2, 2, 7, 7))
     .astype(float), {"kernel_size": 3, "stride": 2, "padding": 1}),
    ("repeated values, dilated", np.random.default_rng(4).integers(0, 2, (1, 2, 9, 9))
     .astype(float), {"kernel_size": 2, "stride": 1, "dilation": 3}),
    ("all -inf, padded and dilated", np.full((1, 1, 6, 6), -np.inf),
     {"kernel_size": 3, "stride": 1, "padding": 1, "dilation": 2}),
    ("-inf and numbers, padded", np.where(np.arange(30).reshape(1, 1, 5, 6) % 4 == 0, 1.0,
                                          -np.inf), {"kernel_size": 3, "stride": 2, "padding": 1}),
    ("several NaNs in a window", np.array([[[
        [np.nan, 1.0, np.nan, 5.0], [4.0, np.nan, 2.0, 1.0],
        [1.0, 2.0, np.nan, np.nan], [np.nan, 0.0, 3.0, 0.0]]]]), {"kernel_size": 2}),
    ("NaNs, overlapping and padded", np.where(np.arange(36).reshape(1, 1, 6, 6) % 7 == 3, np.nan,
                                              np.arange(36.0).reshape(1, 1, 6, 6) % 5),
     {"kernel_size": 3, "stride": 1, "padding": 1}),
]


def _check_choice(case: Any, dims: int, x: np.ndarray, kwargs: dict[str, Any]) -> None:
    name = f"max_pool{dims}d"
    want_y, _ = _torch(name, x, None, kwargs)
    dy = np.arange(1.0, want_y.size + 1).reshape(want_y.shape)  # distinct: shows who got what
    want_y, want_dx = _torch(name, x, dy, kwargs)
    y, saved = FORWARD[name](case.asarray(x), **kwargs)
    np.testing.assert_array_equal(case.backend.to_numpy(y), want_y.astype(case.dtype_name))
    dx = BACKWARD[name](case.asarray(dy), saved)
    np.testing.assert_array_equal(case.backend.to_numpy(dx), want_dx.astype(case.dtype_name))


@pytest.mark.parametrize(("what", "x", "kwargs"), TIES, ids=[t[0] for t in TIES])
def test_max_pool_chooses_as_pytorch_among_ties_nan_and_minus_infinity(
    case: Any, what: str, x: np.ndarray, kwargs: dict[str, Any]
) -> None:
    _jax_covers(case, what, JAX_TIES)
    _check_choice(case, 2, x, kwargs)


@pytest.mark.parametrize(("what", "x", "kwargs"), [
    ("all equal", np.full((2, 7), 2.0), {"kernel_size": 3, "stride": 2, "padding": 1}),
    ("repeated values", np.array([[[1.0, 1, 0, 1, 1, 1, 0, 0, 1]]]), {"kernel_size": 3,
                                                                      "stride": 1}),
    ("NaNs and -inf", np.array([[[np.nan, 1, np.nan, -np.inf, -np.inf, 0, np.nan, np.nan]]]),
     {"kernel_size": 3, "stride": 1, "padding": 1, "ceil_mode": True}),
], ids=["all-equal", "repeated", "nan-inf"])
def test_max_pool1d_chooses_as_pytorch(case: Any, what: str, x: np.ndarray,
                                       kwargs: dict[str, Any]) -> None:
    _check_choice(case, 1, x, kwargs)


def test_numpy_skips_the_nan_test_only_when_it_changes_nothing(monkeypatch: Any) -> None:
    """The NumPy path without the per-slice NaN test (no NaN in y) gives the standard path's
    bits, and with a NaN in the input it does test (the choice is PyTorch's)."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 3, (2, 3, 9, 9)).astype(np.float32)
    dy = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    kwargs = {"kernel_size": 3, "stride": 2, "padding": 1}
    fast = F.max_pool2d_backward(dy, F.max_pool2d_forward(x, **kwargs)[1])
    monkeypatch.setattr(P, "nan_free", lambda y, xp: False)
    standard = F.max_pool2d_backward(dy, F.max_pool2d_forward(x, **kwargs)[1])
    np.testing.assert_array_equal(fast, standard)
    monkeypatch.undo()
    x[0, 0, 3, 3] = x[0, 0, 3, 4] = np.nan
    _, want = _torch("max_pool2d", x.astype(np.float64), dy.astype(np.float64), kwargs)
    got = F.max_pool2d_backward(dy, F.max_pool2d_forward(x, **kwargs)[1])
    np.testing.assert_array_equal(got, want.astype(np.float32))


# --------------------------------------------------------------------------------------------
# Layers


LAYERS: list[tuple[Callable[[], nb.Module], tuple[int, ...]]] = [
    (lambda: nb.MaxPool2d(2), (2, 2, 4, 6)),
    (lambda: nb.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (1, 2, 6, 5)),
    (lambda: nb.MaxPool1d((3,), stride=2, padding=1, dilation=2), (2, 2, 9)),
    (lambda: nb.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (1, 2, 5, 6)),
    (lambda: nb.AvgPool1d(3, stride=1, padding=1), (2, 2, 7)),
    (lambda: nb.AdaptiveAvgPool2d((2, 3)), (1, 2, 5, 7)),
]
LAYER_IDS = ["max2d", "max2d-overlap-ceil", "max1d-dilated", "avg2d-exclude-pad", "avg1d",
             "adaptive"]


def _torch_layer(layer: nb.Module) -> torch.nn.Module:
    """The torch.nn layer of the same class built from the layer's config."""
    config = layer.config()
    assert config is not None
    return getattr(torch.nn, type(layer).__name__)(**config)  # type: ignore[no-any-return]


@pytest.mark.parametrize(("make", "shape"), LAYERS, ids=LAYER_IDS)
def test_layers_match_torch_nn_pass_gradcheck_and_read_nothing_back(case: Any, make: Any,
                                                                     shape: Any) -> None:
    """forward/backprop, inference and the no-∂L/∂x forward against torch.nn's layer; finite
    differences on float64 rows; on the GPU-like device, all of it without a host read."""
    _jax_covers(case, LAYER_IDS[[m for m, _ in LAYERS].index(make)], JAX_LAYERS)
    layer = make()
    reference = _torch_layer(layer)
    assert repr(layer) == repr(reference)
    rng = np.random.default_rng(7)
    x = _host(case, rng.standard_normal(shape))
    t = torch.tensor(x, requires_grad=True)
    want = reference(t)
    dy = _host(case, rng.standard_normal(tuple(want.shape)))
    want.backward(torch.tensor(dy))
    xs, dys = case.asarray(x), case.asarray(dy)
    with count_host_reads() as reads:
        y, backprop = layer.forward(xs)
        dx = backprop(dys)
        inferred = layer(xs)
        y0, none = layer.forward(xs, input_grad=False)
        assert none(dys) is None
    if case.backend.name == "gpulike":
        assert reads.count == 0, reads
    assert t.grad is not None
    for got, expected in ((y, want.detach().numpy()), (dx, t.grad.numpy()),
                          (inferred, want.detach().numpy()), (y0, want.detach().numpy())):
        case.check_placement(got)
        np.testing.assert_allclose(case.backend.to_numpy(got), expected, **_tolerances(case))
    if case.is_float64:
        nb.gradcheck(layer, xs)


def test_a_small_network_with_pooling_first_matches_pytorch(case: Any) -> None:
    """MaxPool2d as the first layer (no ∂L/∂x asked), then Flatten and Linear; the weight's
    gradient and, when asked, ∂L/∂x as torch.nn's."""
    rng = np.random.default_rng(9)
    model = nb.Sequential(nb.MaxPool2d(2), nb.AvgPool2d(2, stride=1, padding=1), nb.Flatten(),
                          nb.Linear(2 * 4 * 4, 3, seed=0, dtype=case.dtype_name),
                          backend=case.backend)
    reference = torch.nn.Sequential(torch.nn.MaxPool2d(2), torch.nn.AvgPool2d(2, 1, 1),
                                    torch.nn.Flatten(), torch.nn.Linear(32, 3).double())
    reference.load_state_dict({
        f"3.{name}": torch.tensor(case.backend.to_numpy(p.data).astype(np.float64))
        for name, p in model[3].named_parameters()})
    x = _host(case, rng.standard_normal((2, 2, 6, 6)))
    dy = _host(case, rng.standard_normal((2, 3)))
    t = torch.tensor(x, requires_grad=True)
    out = reference(t)
    out.backward(torch.tensor(dy))
    y, backprop = model.forward(case.asarray(x))
    np.testing.assert_allclose(case.backend.to_numpy(y), out.detach().numpy(),
                               **_tolerances(case))
    assert backprop(case.asarray(dy)) is None
    grad = model[3].weight.grad
    assert grad is not None and reference[3].weight.grad is not None
    np.testing.assert_allclose(case.backend.to_numpy(grad), reference[3].weight.grad.numpy(),
                               **_tolerances(case))
    _, backprop = model.forward(case.asarray(x), input_grad=True)
    assert t.grad is not None
    np.testing.assert_allclose(case.backend.to_numpy(backprop(case.asarray(dy))),
                               t.grad.numpy(), **_tolerances(case))


def test_layers_are_described_and_rebuilt() -> None:
    layers = [nb.MaxPool2d((2, 3), stride=(1, 2), padding=1, dilation=(1, 2), ceil_mode=True),
              nb.MaxPool1d(3), nb.AvgPool2d(3, 2, 1, True, False, 4), nb.AvgPool1d(3, 2, 1),
              nb.AdaptiveAvgPool2d((5, None)), nb.Flatten(0, 2)]
    model = nb.Sequential(*layers)
    rebuilt = nb.layers.build(json.loads(json.dumps(nb.layers.describe(model))))
    assert repr(rebuilt) == repr(model)
    for mine, theirs in zip(rebuilt, layers, strict=True):
        assert mine.config() == theirs.config()
        assert not list(mine.named_parameters()) and not mine.state_dict()


def test_reprs_are_pytorchs() -> None:
    for ours, theirs in [
        (nb.MaxPool2d(2), torch.nn.MaxPool2d(2)),
        (nb.MaxPool2d((2, 3), 1, 1, 2, ceil_mode=True),
         torch.nn.MaxPool2d((2, 3), 1, 1, 2, ceil_mode=True)),
        (nb.MaxPool1d(3, 2), torch.nn.MaxPool1d(3, 2)),
        (nb.AvgPool2d(3, 2, 1), torch.nn.AvgPool2d(3, 2, 1)),
        (nb.AvgPool1d(2), torch.nn.AvgPool1d(2)),
        (nb.AvgPool1d(3, 2, 1), torch.nn.AvgPool1d(3, 2, 1)),
        (nb.AdaptiveAvgPool2d(1), torch.nn.AdaptiveAvgPool2d(1)),
        (nb.AdaptiveAvgPool2d((5, None)), torch.nn.AdaptiveAvgPool2d((5, None))),
    ]:
        assert repr(ours) == repr(theirs)


# --------------------------------------------------------------------------------------------
# Bad arguments and inputs


@pytest.mark.parametrize(("make", "error", "match"), [
    (lambda: nb.MaxPool2d(0), ValueError, r"MaxPool2d: kernel_size must be a positive integer"),
    (lambda: nb.MaxPool2d(2, stride=0), ValueError, r"MaxPool2d: stride must be a positive"),
    (lambda: nb.MaxPool2d(2, stride=(1, -1)), ValueError, r"MaxPool2d: stride must be a pos"),
    (lambda: nb.AvgPool1d(2, stride=0), ValueError, r"AvgPool1d: stride must be a positive"),
    (lambda: nb.MaxPool2d(2, dilation=0), ValueError, r"MaxPool2d: dilation must be a positive"),
    (lambda: nb.MaxPool2d(2, padding=-1), ValueError, r"padding must be a non-negative"),
    (lambda: nb.MaxPool2d(3, padding=2), ValueError,
     r"MaxPool2d: padding must be at most half the kernel size, got padding=\(2, 2\) "
     r"for kernel_size=\(3, 3\)"),
    (lambda: nb.MaxPool1d(3, padding=2, dilation=2), ValueError,  # PyTorch's rule: k, not d(k-1)+1
     r"MaxPool1d: padding must be at most half the kernel size, got padding=2 for kernel_size=3"),
    (lambda: nb.MaxPool1d(4, padding=2, dilation=2), None, None),
    (lambda: nb.AvgPool2d(3, padding=2), ValueError,
     r"AvgPool2d: padding must be at most half the kernel size, got padding=\(2, 2\)"),
    (lambda: nb.AvgPool1d(2, padding=2), ValueError, r"AvgPool1d: padding .* got padding=2 "
                                                     r"for kernel_size=2"),
    (lambda: nb.MaxPool2d(2, return_indices=True), NotImplementedError, r"return_indices"),
    (lambda: nb.MaxPool1d((2, 2)), TypeError, r"MaxPool1d: kernel_size must be an int or a "
                                              r"tuple of one int, got \(2, 2\)"),
    (lambda: nb.MaxPool2d(2.0), TypeError, r"MaxPool2d: kernel_size must be an int or a tuple"),
    (lambda: nb.MaxPool2d(2, ceil_mode=1), TypeError, r"ceil_mode must be a bool"),
    (lambda: nb.AvgPool2d(2, divisor_override=0), ValueError, r"divisor_override must not be "
                                                              r"zero"),
    (lambda: nb.AdaptiveAvgPool2d((0, 3)), ValueError, r"AdaptiveAvgPool2d: output_size must be "
                                                       r"positive"),
    (lambda: nb.AdaptiveAvgPool2d((1, 2, 3)), TypeError, r"output_size must be an int or a pair"),
])
def test_bad_arguments_are_refused_at_construction(make: Any, error: Any, match: Any) -> None:
    if error is None:
        make()
        return
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(("layer", "shape", "match"), [
    (nb.MaxPool2d(2), (4, 6),
     r"MaxPool2d\(kernel_size=2, .*\): expected input of shape \(N, C, H, W\) or \(C, H, W\), "
     r"got \(4, 6\)"),
    (nb.MaxPool2d(2), (1, 2, 3, 4, 5), r"expected input of shape \(N, C, H, W\)"),
    (nb.MaxPool1d(2), (2, 3, 4, 4), r"MaxPool1d\(.*\): expected input of shape \(N, C, L\) or "
                                    r"\(C, L\), got \(2, 3, 4, 4\)"),
    (nb.MaxPool2d(3), (2, 3, 2, 5),
     r"MaxPool2d\(kernel_size=3, .*\): kernel_size=\(3, 3\) with dilation=\(1, 1\) is larger "
     r"than the padded input \(2, 5\) .* of input shape \(2, 3, 2, 5\): output size \(0, 1\)"),
    (nb.MaxPool1d(3, dilation=3, padding=1), (1, 2, 4),
     r"MaxPool1d\(.*\): kernel_size=3 with dilation=3 is larger than the padded input \(6,\)"),
    (nb.AvgPool2d(5, padding=2), (1, 1, 0, 3), r"AvgPool2d\(.*\): input of shape \(1, 1, 0, 3\) "
                                               r"has an empty channel or spatial axis"),
    (nb.AdaptiveAvgPool2d(2), (3, 4), r"AdaptiveAvgPool2d\(output_size=2\): expected input of "
                                      r"shape \(N, C, H, W\) or \(C, H, W\), got \(3, 4\)"),
])
def test_bad_inputs_name_the_layer_and_the_shapes(layer: nb.Module, shape: Any, match: str
                                                  ) -> None:
    x = np.ones(shape, dtype=np.float32)
    with pytest.raises(LayerInputError, match=match):
        layer.forward(x)
    with pytest.raises(LayerInputError, match=match):
        layer(x)
    model = nb.Sequential(nb.Identity(), nb.Sequential(nb.Identity(), layer))
    with pytest.raises(LayerInputError, match=r"^Sequential: layer 1\.1 .*" + match):
        model.forward(x)
    with pytest.raises(LayerInputError, match=r"^Sequential: layer 1\.1 "):
        model(x)


def test_bad_calls_of_the_functions_are_refused() -> None:
    x = np.ones((1, 2, 4, 4))
    with pytest.raises(P.PoolingError, match=r"^max_pool2d: expected input of shape"):
        F.max_pool2d(np.ones((4, 4)), 2)
    with pytest.raises(TypeError, match=r"avg_pool2d: input must have a floating dtype .*int64"):
        F.avg_pool2d(np.ones((1, 2, 4, 4), dtype=np.int64), 2)
    with pytest.raises(NotImplementedError, match=r"max_pool2d: return_indices=True"):
        F.max_pool2d(x, 2, return_indices=True)
    with pytest.raises(ValueError, match=r"max_pool1d: padding must be at most half"):
        F.max_pool1d(np.ones((2, 8)), 2, padding=2)
    _, saved = F.max_pool2d_forward(x, 2)
    with pytest.raises(P.PoolingError, match=r"max_pool2d backward: dy of shape \(1, 2, 3, 3\) "
                                             r"for an output of shape \(1, 2, 2, 2\)"):
        F.max_pool2d_backward(np.ones((1, 2, 3, 3)), saved)
    with pytest.raises(TypeError, match=r"avg_pool backward: saved is not"):
        F.avg_pool2d_backward(np.ones((1, 2, 2, 2)), saved)
    _, saved = F.adaptive_avg_pool2d_forward(x, 3)
    with pytest.raises(P.PoolingError, match=r"adaptive_avg_pool2d backward: dy of shape"):
        F.adaptive_avg_pool2d_backward(np.ones((1, 2, 2, 2)), saved)
    with pytest.raises(TypeError, match=r"output_size must be an int or a pair"):
        F.adaptive_avg_pool2d(x, "3")


def test_empty_batches_pool_to_empty_outputs(case: Any) -> None:
    x = case.asarray(np.ones((0, 2, 5, 5)))
    y, saved = F.max_pool2d_forward(x, 2)
    assert tuple(y.shape) == (0, 2, 2, 2)
    assert tuple(F.max_pool2d_backward(case.asarray(np.ones((0, 2, 2, 2))), saved).shape) == \
        (0, 2, 5, 5)
    assert tuple(F.avg_pool2d(x, 3, 1, 1).shape) == (0, 2, 5, 5)


def test_pooling_layers_trace_inside_a_callers_jax_jit(case: Any) -> None:
    """A jitted step through the pooling layers (their fused kernels inlined) matches eager."""
    if case.backend.name != "jax":
        pytest.skip("jax.jit is JAX's")
    import jax

    model = nb.Sequential(nb.MaxPool2d(3, 2, 1), nb.AvgPool2d(2, ceil_mode=True),
                          nb.AdaptiveAvgPool2d((2, 3)), nb.Flatten(), backend=case.backend)
    rng = np.random.default_rng(11)
    x = case.asarray(rng.standard_normal((2, 2, 9, 11)))
    dy = case.asarray(rng.standard_normal((2, 12)))

    def step(x: Any, dy: Any) -> tuple[Any, Any]:
        y, backprop = model.forward_pass(x, nb.layers.Context.of(case.xp, True))
        return y, backprop(dy)

    for got, want in zip(jax.jit(step)(x, dy), step(x, dy), strict=True):
        np.testing.assert_allclose(case.backend.to_numpy(got), case.backend.to_numpy(want),
                                   rtol=1e-6, atol=1e-7)
