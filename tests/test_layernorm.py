"""LayerNorm and RMSNorm (functional and layers) against PyTorch autograd in float64 on the
whole matrix: y, ∂L/∂x, ∂L/∂γ, ∂L/∂β over one and two normalised axes, with and without γ/β,
RMSNorm's eps=None (finfo(dtype).eps); two-pass statistics on data with a large mean; finite
differences; no host reads; PyTorch state dicts; descriptions; bad shapes and arguments."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _compare import close, held

import nnbackend as nb
import nnbackend.functional as F
from nnbackend.functional.normalization import (
    layer_norm_backward,
    layer_norm_forward,
    rms_norm_backward,
    rms_norm_forward,
)
from nnbackend.layers.normalization import InputLayoutError
from nnbackend.testing import count_host_reads

SHAPE = (3, 4, 6)  # one input shape for every test (JAX compiles per shape)


def _torch(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.tensor(a, dtype=torch.float64, requires_grad=True)


def _grad(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None or t.grad is None else t.grad.numpy()


# (normalized_shape, weight, bias)
CONFIGS = [((6,), True, True), ((4, 6), True, False), ((6,), False, False)]


@pytest.mark.parametrize(("norm_shape", "has_weight", "has_bias"), CONFIGS, ids=str)
@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_functional_matches_torch(case: Any, norm_shape: tuple[int, ...], has_weight: bool,
                                  has_bias: bool, kind: str) -> None:
    rng = np.random.default_rng(len(norm_shape))
    x = held(case, rng.normal(0.5, 2.0, SHAPE))
    dy = held(case, rng.normal(size=SHAPE))
    weight = held(case, rng.normal(1.0, 0.5, norm_shape)) if has_weight else None
    bias = held(case, rng.normal(size=norm_shape)) if has_bias and kind == "layer" else None
    tx, tw, tb = _torch(x), _torch(weight), _torch(bias)
    if kind == "layer":
        ty = torch.nn.functional.layer_norm(tx, norm_shape, tw, tb, eps=1e-5)
    else:  # eps None: torch's finfo(float64).eps; ours the case's dtype's, as torch's would be
        eps = float(np.finfo(case.dtype_name).eps)
        ty = torch.nn.functional.rms_norm(tx, norm_shape, tw, eps=eps)
    ty.backward(torch.from_numpy(dy))
    w = None if weight is None else case.asarray(weight)
    b = None if bias is None else case.asarray(bias)
    if kind == "layer":
        y, saved = layer_norm_forward(case.asarray(x), norm_shape, w, b)
        assert saved is not None
        dx, dw, db = layer_norm_backward(case.asarray(dy), saved)
        y_plain = F.layer_norm(case.asarray(x), norm_shape, w, b)
    else:
        y, saved = rms_norm_forward(case.asarray(x), norm_shape, w)
        assert saved is not None
        dx, dw = rms_norm_backward(case.asarray(dy), saved)
        db = None
        y_plain = F.rms_norm(case.asarray(x), norm_shape, w)
    case.check_placement(y)
    case.check_placement(dx)
    close(y, ty.detach().numpy(), case, "y")
    close(y_plain, ty.detach().numpy(), case, "y (plain)")
    close(dx, _grad(tx), case, "dx")  # type: ignore[arg-type]
    for name, got, ref in (("dweight", dw, tw), ("dbias", db, tb)):
        if ref is None:
            assert got is None, name
        else:
            case.check_placement(got)
            assert tuple(got.shape) == norm_shape
            close(got, _grad(ref), case, name)  # type: ignore[arg-type]


def test_two_pass_statistics_on_data_with_a_large_mean(case: Any) -> None:
    """x = 100 + N(0, 1): E[x²] − E[x]² would lose ~4 digits of σ² (float32: 6e-4 relative);
    the two-pass variance keeps y to the matrix's tolerance."""
    rng = np.random.default_rng(3)
    x = held(case, 100.0 + rng.normal(size=SHAPE))
    ref = torch.nn.functional.layer_norm(torch.from_numpy(x), (6,)).numpy()
    close(F.layer_norm(case.asarray(x), 6), ref, case, "y")


@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_layers_load_torch_state_dicts_and_train_as_torch(case: Any, kind: str) -> None:
    rng = np.random.default_rng(4)
    if kind == "layer":
        ref = torch.nn.LayerNorm((4, 6), dtype=torch.float64)
        layer: nb.Module = nb.LayerNorm((4, 6), dtype=case.dtype_name, backend=case.backend)
    else:
        ref = torch.nn.RMSNorm(6, eps=1e-4, dtype=torch.float64)
        layer = nb.RMSNorm(6, eps=1e-4, dtype=case.dtype_name, backend=case.backend)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.from_numpy(held(case, rng.normal(1.0, 0.5, tuple(p.shape)))))
    layer.load_state_dict({k: v.numpy().astype(case.dtype_name)
                           for k, v in ref.state_dict().items()})
    assert set(layer.state_dict()) == set(ref.state_dict())
    x, dy = held(case, rng.normal(size=SHAPE)), held(case, rng.normal(size=SHAPE))
    tx = torch.tensor(x, requires_grad=True)
    ty = ref(tx)
    ty.backward(torch.from_numpy(dy))
    y, backprop = layer.forward(case.asarray(x))
    close(y, ty.detach().numpy(), case, "y")
    close(layer(case.asarray(x)), ty.detach().numpy(), case, "y (inference)")
    close(backprop(case.asarray(dy)), tx.grad.numpy(), case, "dx")  # type: ignore[union-attr]
    for (name, p), (_, q) in zip(layer.named_parameters(), ref.named_parameters(), strict=True):
        close(p.grad, q.grad.numpy(), case, name)  # type: ignore[union-attr]


@pytest.mark.parametrize("make", [
    lambda: nb.LayerNorm(6, dtype="float64"),
    lambda: nb.LayerNorm((4, 6), bias=False, dtype="float64"),
    lambda: nb.LayerNorm(6, elementwise_affine=False, dtype="float64"),
    lambda: nb.RMSNorm((4, 6), dtype="float64"),
    lambda: nb.RMSNorm(6, eps=1e-3, elementwise_affine=False, dtype="float64"),
], ids=["layer", "layer-nobias", "layer-noaffine", "rms", "rms-noaffine"])
def test_gradcheck(case: Any, make: Any) -> None:
    if not case.is_float64:
        pytest.skip("finite differences need float64")
    layer = make().to(case.backend)
    x = case.asarray(np.random.default_rng(5).normal(size=(2, 4, 6)))
    report = nb.gradcheck(layer, x)
    assert set(report.max_abs_error) == {"x", *dict(layer.named_parameters())}


def test_no_host_reads(case: Any) -> None:
    if case.backend.name != "gpulike":
        pytest.skip("only the GPU-like test device counts host reads")
    rng = np.random.default_rng(6)
    x, dy = case.asarray(rng.normal(size=SHAPE)), case.asarray(rng.normal(size=SHAPE))
    for layer in (nb.LayerNorm(6, dtype=case.dtype_name, backend=case.backend),
                  nb.RMSNorm((4, 6), dtype=case.dtype_name, backend=case.backend),
                  nb.RMSNorm(6, elementwise_affine=False)):
        with count_host_reads() as reads:
            for _ in range(2):
                _, backprop = layer.forward(x)
                backprop(dy)
                layer(x)
        assert reads.count == 0, (layer, reads)


def test_descriptions_rebuild() -> None:
    model = nb.Sequential(nb.LayerNorm((4, 6), eps=1e-6, bias=False), nb.RMSNorm(6, eps=None))
    twin = nb.layers.build(nb.layers.describe(model))
    assert repr(twin) == repr(model)
    assert repr(model[0]) == "LayerNorm((4, 6), eps=1e-06, elementwise_affine=True, bias=False)"
    assert repr(model[1]) == "RMSNorm((6,), eps=None, elementwise_affine=True)"
    twin.load_state_dict(model.state_dict())


def test_wrong_normalized_shape_is_named() -> None:
    x = np.zeros((2, 3, 5), dtype=np.float32)
    with pytest.raises(InputLayoutError, match=r"LayerNorm\(\(6,\), eps=1e-05, "
                                               r"elementwise_affine=True\) expected input of "
                                               r"shape \(\.\.\., 6\), got \(2, 3, 5\)"):
        nb.LayerNorm(6)(x)
    with pytest.raises(InputLayoutError, match=r"Sequential: layer 1 RMSNorm\(\(4, 6\).* "
                                               r"expected input of shape \(\.\.\., 4, 6\), got "
                                               r"\(2, 3, 5\)"):
        nb.Sequential(nb.Identity(), nb.RMSNorm((4, 6))).forward(x)
    with pytest.raises(ValueError, match=r"layer_norm: expected input of shape \(\.\.\., 6\) "
                                         r"\(normalized_shape \(6,\)\), got \(2, 3, 5\)"):
        F.layer_norm(x, 6)
    with pytest.raises(ValueError, match=r"rms_norm: weight must have shape normalized_shape "
                                         r"= \(5,\)"):
        F.rms_norm(x, 5, np.ones(4, dtype=np.float32))


@pytest.mark.parametrize(("make", "match"), [
    (lambda: nb.LayerNorm(0), r"LayerNorm: normalized_shape must be a positive int"),
    (lambda: nb.LayerNorm("6"), r"LayerNorm: normalized_shape must be"),
    (lambda: nb.RMSNorm(()), r"RMSNorm: normalized_shape must be .* got \(\)"),
    (lambda: nb.LayerNorm(6, eps=-1.0), r"LayerNorm: eps"),
    (lambda: nb.RMSNorm(6, eps=-1.0), r"RMSNorm: eps"),
])
def test_bad_arguments(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()
