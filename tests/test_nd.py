"""N-D inputs (issue 9, item 7): Linear on the last axis of inputs of any rank, cross-entropy
with the class axis last or anywhere (``axis=``), MSE and BCE on any shape, and initialisers'
fans for kernels of any rank, on the whole backend matrix.

References: PyTorch autograd in float64 (``torch.nn.functional.linear``/``cross_entropy``, the
latter in its own (N, C, d1, ...) layout, reached by moving the class axis), nnbackend's
``gradcheck`` (central finite differences), ``torch.nn.init._calculate_fan_in_and_fan_out``,
and sampling distributions of the standard deviation.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
from conftest import Case

import nnbackend as nb
import nnbackend.functional as F
from nnbackend.backend import is_host_array, supports_views

torch = pytest.importorskip("torch")

IN, OUT = 4, 3
SHAPES = {"sequence": (5, 7, IN), "grid": (3, 2, 5, IN), "sample": (IN,), "matrix": (6, IN)}


def _host(case: Case, x: Any) -> np.ndarray:
    """A backend array on the host, in float64 for comparison with the references."""
    return np.asarray(case.backend.to_numpy(x), dtype=np.float64)


def _close(case: Case, got: Any, want: np.ndarray) -> None:
    """Relative agreement to the case's tolerance, with an absolute floor at the reference's
    scale (a float32 sum of products that cancels has no relative accuracy near zero)."""
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    np.testing.assert_allclose(_host(case, got), want, rtol=case.rtol, atol=case.rtol * scale)


def _layer(case: Case, *, bias: bool = True, seed: int = 0) -> nb.Linear:
    return nb.Linear(IN, OUT, bias=bias, dtype=case.dtype_name, backend=case.backend, seed=seed)


def _input(case: Case, shape: tuple[int, ...], seed: int = 1) -> tuple[Any, np.ndarray]:
    """An input on the backend and its exact values (after rounding to the case's dtype)."""
    x = case.asarray(np.random.default_rng(seed).standard_normal(shape))
    return x, _host(case, x)


def _torch_linear(x: np.ndarray, W: np.ndarray, b: np.ndarray | None,
                  r: np.ndarray) -> dict[str, np.ndarray]:
    """z = F.linear(x, W, b) and the gradients of Σ z ⊙ r, by PyTorch autograd in float64."""
    xt = torch.tensor(x, requires_grad=True)
    Wt = torch.tensor(W, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    z = torch.nn.functional.linear(xt, Wt, bt)
    (z * torch.tensor(r)).sum().backward()
    out = {"z": z.detach().numpy(), "dx": xt.grad.numpy(), "dW": Wt.grad.numpy()}
    if bt is not None:
        out["db"] = bt.grad.numpy()
    return out


# ------------------------------------------------------------------------------------- Linear


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_linear_matches_torch_on_any_rank(case: Case, name: str, bias: bool) -> None:
    """(N, L, in) → (N, L, out), (N, A, B, in) → (N, A, B, out), (in,) → (out,): output, ∂L/∂x,
    ∂L/∂W = Σ over every leading axis of δᵀx and ∂L/∂b = Σ δ, as PyTorch's Linear."""
    shape = SHAPES[name]
    layer = _layer(case, bias=bias)
    x, x_host = _input(case, shape)
    z, backprop = layer.forward(x, input_grad=True)
    out_shape = (*shape[:-1], OUT)
    assert tuple(z.shape) == out_shape
    case.check_placement(z)
    r_host = np.random.default_rng(2).standard_normal(out_shape)
    r = case.asarray(r_host)
    dx = backprop(r)
    case.check_placement(dx)
    assert tuple(dx.shape) == shape
    want = _torch_linear(x_host, _host(case, layer.weight.data),
                         _host(case, layer.bias.data) if bias else None, _host(case, r))
    _close(case, z, want["z"])
    _close(case, dx, want["dx"])
    assert layer.weight.grad is not None
    _close(case, layer.weight.grad, want["dW"])
    if bias:
        assert layer.bias is not None and layer.bias.grad is not None
        _close(case, layer.bias.grad, want["db"])
    # Inference (model(x)) gives the training forward's output, bit for bit.
    np.testing.assert_array_equal(_host(case, layer(x)), _host(case, z))


@pytest.mark.parametrize("name", ["sequence", "grid", "sample"])
def test_linear_gradcheck_on_any_rank(case: Case, name: str) -> None:
    if not case.is_float64:
        pytest.skip("gradcheck works in float64")
    layer = _layer(case)
    x, _ = _input(case, SHAPES[name])
    report = nb.gradcheck(layer, x)
    assert set(report.max_abs_error) == {"x", "weight", "bias"}  # it raises on a mismatch


@pytest.mark.parametrize("name", ["sequence", "grid"])
def test_linear_on_n_d_is_one_gemm_over_the_positions(case: Case, name: str) -> None:
    """The N-D forward and backward equal, bit for bit, the 2-D ones on the input reshaped to
    (N·…, in): the same products, one GEMM each, whatever the rank."""
    shape = SHAPES[name]
    rows = math.prod(shape[:-1])
    x, x_host = _input(case, shape)
    r_host = np.random.default_rng(3).standard_normal((*shape[:-1], OUT))
    results = []
    for x_in, r_in in ((x, r_host), (case.asarray(x_host.reshape(rows, IN)),
                                     r_host.reshape(rows, OUT))):
        layer = _layer(case)
        z, backprop = layer.forward(x_in, input_grad=True)
        dx = backprop(case.asarray(r_in))
        assert layer.weight.grad is not None and layer.bias is not None
        assert layer.bias.grad is not None
        results.append([_host(case, a).reshape(-1) for a in
                        (z, dx, layer.weight.grad, layer.bias.grad)])
    for nd, flat in zip(*results, strict=True):
        np.testing.assert_array_equal(nd, flat)


def test_linear_on_a_non_contiguous_input(case: Case) -> None:
    """A permuted view (L, N, in) → (N, L, in): the reshape copies where it must, and the
    values and gradients are PyTorch's."""
    layer = _layer(case)
    x, x_host = _input(case, (7, 5, IN))
    x = case.xp.permute_dims(x, (1, 0, 2))
    x_host = x_host.transpose(1, 0, 2)
    z, backprop = layer.forward(x, input_grad=True)
    r_host = np.random.default_rng(4).standard_normal((5, 7, OUT))
    r = case.asarray(r_host)
    dx = backprop(case.xp.permute_dims(case.asarray(r_host.transpose(1, 0, 2)), (1, 0, 2)))
    assert layer.bias is not None
    want = _torch_linear(x_host, _host(case, layer.weight.data), _host(case, layer.bias.data),
                         _host(case, r))
    _close(case, z, want["z"])
    _close(case, dx, want["dx"])
    assert layer.weight.grad is not None
    _close(case, layer.weight.grad, want["dW"])


def test_linear_backward_writes_n_d_gradients_into_the_given_buffers(case: Case) -> None:
    """``weight_grad_out``/``bias_grad_out`` (an optimizer's flat gradient views) receive
    ∂L/∂W and ∂L/∂b of an N-D input where the library writes into arrays (NumPy, PyTorch, CuPy,
    the GPU-like device) and are left alone elsewhere, the values the same either way."""
    xp = case.xp
    x, x_host = _input(case, SHAPES["grid"])
    W = case.asarray(np.random.default_rng(5).standard_normal((OUT, IN)))
    dz = case.asarray(np.random.default_rng(6).standard_normal((*SHAPES["grid"][:-1], OUT)))
    dW_out = case.backend.zeros((OUT, IN), dtype=case.dtype)
    db_out = case.backend.zeros((OUT,), dtype=case.dtype)
    dx, dW, db = F.linear_backward(dz, x, W, xp=xp, weight_grad_out=dW_out, bias_grad_out=db_out)
    want = _torch_linear(x_host, _host(case, W), np.zeros(OUT), _host(case, dz))
    _close(case, dW, want["dW"])
    assert db is not None and dx is not None
    _close(case, db, want["db"])
    _close(case, dx, want["dx"])
    native = nb._libraries.library_of(xp).native is not None
    assert (dW is dW_out) is native and (db is db_out) is native
    if not native:
        assert not np.any(_host(case, dW_out)) and not np.any(_host(case, db_out))


def test_linear_layer_fills_its_grad_buffers_from_an_n_d_input(case: Case) -> None:
    """A layer whose parameters have gradient buffers (the flat path) keeps them on N-D input:
    the gradient is the buffer, holding PyTorch's values."""
    if not supports_views(case.xp):
        pytest.skip("gradient buffers are views of a flat buffer: namespaces with views only")
    layer = _layer(case)
    assert layer.bias is not None
    buffers = [case.backend.zeros(p.shape, dtype=case.dtype) for p in (layer.weight, layer.bias)]
    layer.weight.grad_buffer, layer.bias.grad_buffer = buffers
    x, x_host = _input(case, SHAPES["sequence"])
    z, backprop = layer.forward(x)
    r_host = np.random.default_rng(7).standard_normal(tuple(z.shape))
    backprop(case.asarray(r_host))
    assert layer.weight.grad is buffers[0] and layer.bias.grad is buffers[1]
    want = _torch_linear(x_host, _host(case, layer.weight.data), _host(case, layer.bias.data),
                         r_host.astype(case.dtype_name).astype(np.float64))
    _close(case, buffers[0], want["dW"])
    _close(case, buffers[1], want["db"])


def test_sequence_model_with_cross_entropy_matches_torch(case: Case) -> None:
    """Linear-ReLU-Linear on (N, L, in) and cross-entropy over (N, L, C) logits with labels
    (N, L), the sequence model's layout: loss, ∂L/∂x and every parameter's gradient."""
    n, length, hidden, classes = 3, 6, 5, 4
    model = nb.Sequential(
        nb.Linear(IN, hidden, dtype=case.dtype_name, backend=case.backend, seed=1), nb.ReLU(),
        nb.Linear(hidden, classes, dtype=case.dtype_name, backend=case.backend, seed=2))
    x, x_host = _input(case, (n, length, IN), seed=8)
    labels_host = np.random.default_rng(9).integers(0, classes, size=(n, length))
    labels = case.asarray(labels_host, dtype=case.index_dtype_name)
    logits, backprop = model.forward(x, input_grad=True)
    loss, grad = nb.CrossEntropyLoss(label_smoothing=0.1)(logits, labels)
    dx = backprop(grad)

    tmodel = torch.nn.Sequential(torch.nn.Linear(IN, hidden), torch.nn.ReLU(),
                                 torch.nn.Linear(hidden, classes)).double()
    with torch.no_grad():
        for tp, p in zip(tmodel.parameters(), model.parameters(), strict=True):
            tp.copy_(torch.tensor(_host(case, p.data)))
    xt = torch.tensor(x_host, requires_grad=True)
    tlogits = tmodel(xt)
    tloss = torch.nn.functional.cross_entropy(tlogits.permute(0, 2, 1),
                                              torch.tensor(labels_host), label_smoothing=0.1)
    tloss.backward()
    _close(case, logits, tlogits.detach().numpy())
    _close(case, loss, tloss.detach().numpy())
    _close(case, dx, xt.grad.numpy())
    for tp, p in zip(tmodel.parameters(), model.parameters(), strict=True):
        assert p.grad is not None
        _close(case, p.grad, tp.grad.numpy())


def test_wrong_width_of_an_n_d_input_names_the_layer_and_shapes(case: Case) -> None:
    model = nb.Sequential(_layer(case), nb.ReLU(),
                          nb.Linear(OUT, 2, dtype=case.dtype_name, backend=case.backend))
    bad = case.asarray(np.zeros((2, 3, IN + 1)))
    message = r"Linear\(4→3\) expected input of shape \(\.\.\., 4\), got \(2, 3, 5\)$"
    for run in (lambda: model(bad), lambda: model.forward(bad), lambda: _layer(case)(bad)):
        with pytest.raises(ValueError, match=message):
            run()


# ------------------------------------------------------------------------------ cross-entropy

# (logits shape, class axis): the class axis last (the default), PyTorch's (N, C, d1, d2),
# a class axis in the middle, and the classes first.
LAYOUTS = {
    "last-3d": ((4, 5, 6), -1),
    "last-4d": ((2, 3, 4, 5), -1),
    "torch-4d": ((2, 5, 3, 4), 1),
    "middle-3d": ((3, 4, 5), 1),
    "first-2d": ((4, 3), 0),
    "matrix": ((5, 4), -1),
}
TARGETS = ("labels", "labels-smoothing", "probabilities", "probabilities-smoothing")


def _ce_data(case: Case, layout: str, target: str,
             seed: int = 0) -> tuple[Any, Any, np.ndarray, np.ndarray, int]:
    """Logits and target on the backend, their exact host values, and the class axis."""
    shape, axis = LAYOUTS[layout]
    rng = np.random.default_rng(seed)
    z = case.asarray(3.0 * rng.standard_normal(shape))
    classes = shape[axis]
    positions = shape[:axis % len(shape)] + shape[axis % len(shape) + 1:]
    if target.startswith("labels"):
        t_host = rng.integers(0, classes, size=positions)
        t = case.asarray(t_host, dtype=case.index_dtype_name)
    else:
        t_host = np.moveaxis(rng.dirichlet(np.ones(classes), size=positions), -1, axis)
        t = case.asarray(t_host)
        t_host = _host(case, t)
    return z, t, _host(case, z), t_host, axis


def _torch_ce(z: np.ndarray, target: np.ndarray, axis: int,
              **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's loss and ∂loss/∂z in float64, its class axis (1) reached by moving ours."""
    zt = torch.tensor(np.moveaxis(z, axis, 1), requires_grad=True)
    if target.dtype.kind in "iu":
        tt = torch.tensor(target, dtype=torch.int64)
    else:
        tt = torch.tensor(np.moveaxis(target, axis, 1))
    loss = torch.nn.functional.cross_entropy(zt, tt, **kwargs)
    loss.backward()
    return loss.detach().numpy(), np.moveaxis(zt.grad.numpy(), 1, axis)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_cross_entropy_matches_torch_in_any_layout(case: Case, layout: str, target: str,
                                                   reduction: str) -> None:
    """Loss (mean over all N·d1·… positions, as PyTorch) and gradient, the classes on any axis,
    with integer labels (N, ...) or probabilities of the logits' shape, smoothed or not."""
    z, t, z_host, t_host, axis = _ce_data(case, layout, target)
    smoothing = 0.15 if target.endswith("smoothing") else 0.0
    loss, grad = F.cross_entropy(z, t, axis=axis, reduction=reduction,
                                 label_smoothing=smoothing)
    case.check_placement(loss)
    assert loss.ndim == 0
    case.check_placement(grad)
    assert tuple(grad.shape) == tuple(z_host.shape)
    want_loss, want_grad = _torch_ce(z_host, t_host, axis, reduction=reduction,
                                     label_smoothing=smoothing)
    _close(case, loss, want_loss)
    _close(case, grad, want_grad)
    # The loss object gives the same bits.
    obj_loss, obj_grad = nb.CrossEntropyLoss(reduction=reduction, label_smoothing=smoothing,
                                             axis=axis)(z, t)
    np.testing.assert_array_equal(_host(case, obj_loss), _host(case, loss))
    np.testing.assert_array_equal(_host(case, obj_grad), _host(case, grad))


@pytest.mark.parametrize("layout", ["last-3d", "torch-4d"])
def test_cross_entropy_gradcheck_in_n_d(case: Case, layout: str) -> None:
    if not case.is_float64:
        pytest.skip("gradcheck works in float64")
    z, t, *_, axis = _ce_data(case, layout, "labels-smoothing", seed=1)
    report = nb.gradcheck(nb.CrossEntropyLoss(label_smoothing=0.1, axis=axis), z, t)
    assert report.max_abs_error["prediction"] < 1e-8


def test_cross_entropy_default_axis_is_last(case: Case) -> None:
    """Without ``axis``, (N, L, C) logits take their classes from the last axis; the same
    logits moved to PyTorch's layout with ``axis=1`` give the same loss."""
    z, t, z_host, t_host, _ = _ce_data(case, "last-3d", "labels")
    loss, grad = F.cross_entropy(z, t)
    moved = case.xp.permute_dims(z, (0, 2, 1))
    loss_1, grad_1 = F.cross_entropy(moved, t, axis=1)
    _close(case, loss, _torch_ce(z_host, t_host, -1)[0])
    _close(case, loss_1, _host(case, loss))
    _close(case, grad_1, _host(case, grad).transpose(0, 2, 1))


INF = float("inf")


@pytest.mark.parametrize("axis", [-1, 1])
def test_cross_entropy_masked_logits_in_n_d(case: Case, axis: int) -> None:
    """−∞ logits (attention-style masks) in (N, L, C) and (N, C, L): a finite loss, 0 gradient
    on the masked logits, PyTorch's values; a label on a masked logit makes the loss +∞."""
    masked = np.array([[[2.0, -INF, 0.5], [0.1, 0.2, -INF]],
                       [[-INF, 1.0, 0.0], [0.3, -INF, -INF]]])  # (N=2, L=2, C=3)
    labels_host = np.array([[0, 1], [2, 0]])
    if axis == 1:
        masked = masked.transpose(0, 2, 1)
    labels = case.asarray(labels_host, dtype=case.index_dtype_name)
    with np.errstate(invalid="raise", divide="ignore", over="raise"):
        loss, grad = F.cross_entropy(case.asarray(masked), labels, axis=axis)
    want_loss, want_grad = _torch_ce(masked, labels_host, axis)
    assert np.isfinite(want_loss)
    _close(case, loss, want_loss)
    _close(case, grad, want_grad)
    assert np.all(_host(case, grad)[masked == -INF] == 0.0)
    on_mask = case.asarray(np.array([[1, 1], [2, 0]]), dtype=case.index_dtype_name)
    with np.errstate(invalid="raise", divide="ignore", over="raise"):
        loss, grad = F.cross_entropy(case.asarray(masked), on_mask, axis=axis)
    assert float(_host(case, loss)) == INF
    assert np.all(np.isfinite(_host(case, grad)))


@pytest.mark.parametrize("axis", [-1, 1])
def test_cross_entropy_labels_out_of_range_in_n_d(case: Case, axis: int) -> None:
    """Host labels (N, L) outside [0, C) raise naming the range; labels on a device poison the
    loss and exactly the invalid positions' gradient (every class), the rest unchanged."""
    shape = (2, 3, 4) if axis == -1 else (2, 4, 3)
    z_host = np.random.default_rng(10).standard_normal(shape)
    z = case.asarray(z_host)
    labels_host = np.array([[0, 4, 1], [3, -1, 2]])
    labels = case.asarray(labels_host, dtype=case.index_dtype_name)
    if is_host_array(labels):
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\) for logits with 4 "
                                             r"classes, got labels from -1 to 4"):
            F.cross_entropy(z, labels, axis=axis)
        return
    _check_poisoned(case, z, labels, labels_host, axis)


def _check_poisoned(case: Case, z: Any, labels: Any, labels_host: np.ndarray,
                    axis: int) -> None:
    loss, grad = F.cross_entropy(z, labels, axis=axis)
    assert np.isnan(float(_host(case, loss)))
    got = np.moveaxis(_host(case, grad), axis, -1)  # (N, L, C)
    bad = (labels_host < 0) | (labels_host >= 4)
    assert np.isnan(got[bad]).all() and np.isfinite(got[~bad]).all()
    _, want = _torch_ce(_host(case, z), np.where(bad, 0, labels_host), axis)
    np.testing.assert_allclose(got[~bad], np.moveaxis(want, axis, -1)[~bad], rtol=case.rtol)


@pytest.mark.parametrize("axis", [-1, 1])
def test_cross_entropy_device_labels_poison_in_n_d(case: Case, axis: int,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The device path (no range check, NaN where a label is invalid) on every row, as if the
    labels lived on an accelerator."""
    import nnbackend.functional.losses as losses_module

    monkeypatch.setattr(losses_module, "is_host_array", lambda _: False)
    shape = (2, 3, 4) if axis == -1 else (2, 4, 3)
    z = case.asarray(np.random.default_rng(11).standard_normal(shape))
    labels_host = np.array([[0, 4, 1], [3, -1, 2]])
    _check_poisoned(case, z, case.asarray(labels_host, dtype=case.index_dtype_name),
                    labels_host, axis)


def test_cross_entropy_n_d_shape_errors(case: Case) -> None:
    z = case.asarray(np.zeros((4, 5, 6)))
    labels = case.asarray(np.zeros((4, 6), dtype=np.int64), dtype=case.index_dtype_name)
    with pytest.raises(ValueError, match=r"^cross_entropy: integer labels must have shape "
                                         r"\(N, d1\) = \(4, 5\) to match logits \(4, 5, 6\), "
                                         r"got \(4, 6\)$"):
        F.cross_entropy(z, labels)
    z4 = case.asarray(np.zeros((2, 5, 3, 4)))
    with pytest.raises(ValueError, match=r"shape \(N, d1, d2\) = \(2, 3, 4\) to match logits "
                                         r"\(2, 5, 3, 4\), got \(2, 5, 3\)"):
        F.cross_entropy(z4, case.asarray(np.zeros((2, 5, 3), dtype=np.int64),
                                         dtype=case.index_dtype_name), axis=1)
    with pytest.raises(ValueError, match=r"probability targets must have the logits' shape "
                                         r"\(2, 5, 3, 4\), got \(2, 3, 4, 5\) \(integer labels "
                                         r"have shape \(N, d1, d2\)\)"):
        F.cross_entropy(z4, case.asarray(np.zeros((2, 3, 4, 5))), axis=1)
    with pytest.raises(ValueError, match=r"^cross_entropy: axis=3 is out of range for logits "
                                         r"of shape \(4, 5, 6\) \(3 axes\)$"):
        F.cross_entropy(z, labels, axis=3)
    with pytest.raises(ValueError, match=r"axis=-4 is out of range"):
        F.cross_entropy(z, labels, axis=-4)
    with pytest.raises(ValueError, match=r"^cross_entropy: logits must have shape \(N, d1, C\) "
                                         r"with C >= 1, got \(2, 3, 0\)$"):
        F.cross_entropy(case.asarray(np.zeros((2, 3, 0))),
                        case.asarray(np.zeros((2, 3), dtype=np.int64),
                                     dtype=case.index_dtype_name))
    with pytest.raises(ValueError, match=r"shape \(N, C\) with C >= 1, got \(6,\)"):
        F.cross_entropy(case.asarray(np.zeros(6)), labels)


@pytest.mark.parametrize("axis", [True, 1.0, "1", None])
def test_cross_entropy_axis_must_be_an_integer(axis: Any) -> None:
    z, labels = np.zeros((2, 3, 4)), np.zeros((2, 3), dtype=np.int64)
    message = (rf"axis must be an integer \(the class axis\), got {re_repr(axis)} of type "
               rf"{type(axis).__name__}$")
    with pytest.raises(TypeError, match=rf"^cross_entropy: {message}"):
        F.cross_entropy(z, labels, axis=axis)
    with pytest.raises(TypeError, match=rf"^CrossEntropyLoss: {message}"):
        nb.CrossEntropyLoss(axis=axis)


def re_repr(value: Any) -> str:
    return re.escape(repr(value))


def test_cross_entropy_loss_repr_names_a_non_default_axis() -> None:
    assert repr(nb.CrossEntropyLoss()) == "CrossEntropyLoss(reduction='mean', label_smoothing=0.0)"
    assert (repr(nb.CrossEntropyLoss(axis=1))
            == "CrossEntropyLoss(reduction='mean', label_smoothing=0.0, axis=1)")
    assert nb.CrossEntropyLoss(axis=np.int64(1)).axis == 1


def test_cross_entropy_over_no_positions(case: Case) -> None:
    """Logits (N, 0, C): the mean over no positions is refused; the sum is 0 with an empty
    gradient."""
    z = case.asarray(np.zeros((2, 0, 3)))
    labels = case.asarray(np.zeros((2, 0), dtype=np.int64), dtype=case.index_dtype_name)
    with pytest.raises(ValueError, match="empty batch"):
        F.cross_entropy(z, labels)
    loss, grad = F.cross_entropy(z, labels, reduction="sum")
    assert float(_host(case, loss)) == 0.0
    assert tuple(grad.shape) == (2, 0, 3)


# ---------------------------------------------------------------------------------- MSE, BCE


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 3, 2, 5), (7,)], ids=str)
@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_elementwise_losses_take_any_shape(case: Case, loss: str, shape: tuple[int, ...],
                                           reduction: str) -> None:
    rng = np.random.default_rng(12)
    pred = case.asarray(2.0 * rng.standard_normal(shape))
    target = case.asarray(rng.uniform(size=shape))
    ours = (nb.MSELoss if loss == "mse" else nb.BCEWithLogitsLoss)(reduction=reduction)
    got_loss, got_grad = ours(pred, target)
    assert tuple(got_grad.shape) == shape
    pt = torch.tensor(_host(case, pred), requires_grad=True)
    tt = torch.tensor(_host(case, target))
    theirs = (torch.nn.functional.mse_loss if loss == "mse"
              else torch.nn.functional.binary_cross_entropy_with_logits)
    want = theirs(pt, tt, reduction=reduction)
    want.backward()
    _close(case, got_loss, want.detach().numpy())
    _close(case, got_grad, pt.grad.numpy())


# --------------------------------------------------------------------------------- initialisers

def _draw(name: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.asarray(nb.init.get_initializer(name)(shape, np.random.default_rng(seed)))


KERNELS = [(3, 4), (16, 3, 5, 5), (8, 2, 3), (4, 6, 2, 3, 2), (5, 1), (1, 7, 1, 1)]


@pytest.mark.parametrize("shape", KERNELS, ids=str)
def test_fans_are_torchs(shape: tuple[int, ...]) -> None:
    """fan_in = in·∏kernel, fan_out = out·∏kernel, exactly as torch.nn.init computes them."""
    want = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    assert nb.init.fans(shape) == want


@pytest.mark.parametrize("shape", [(5,), ()], ids=str)
def test_fans_need_two_axes_as_in_torch(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    with pytest.raises(ValueError, match=rf"at least two axes .* got shape {re_repr(shape)}$"):
        nb.init.fans(shape)
    for name in ("he", "xavier", "lecun"):
        with pytest.raises(ValueError, match="at least two axes"):
            _draw(name, shape, 0)


@pytest.mark.parametrize("name", ["he", "lecun", "xavier"])
def test_initialiser_spread_for_a_convolution_kernel(name: str) -> None:
    """A (16, 3, 5, 5) kernel: fan_in = 75, fan_out = 400. The sample standard deviation of its
    1200 draws lies within 4 standard errors of the one torch.nn.init's formula gives (he:
    √(2/75), lecun: √(1/75), xavier: √(2/475), uniform on ±√(6/475)); fans computed from the
    first two axes alone (3 and 16) would be off by factors of 5 and more."""
    shape = (16, 3, 5, 5)
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    w = _draw(name, shape, 2024)
    assert w.shape == shape and w.dtype == np.float64
    n = w.size
    if name == "xavier":
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        std = limit / math.sqrt(3.0)
        # Var(s²)/σ⁴ ≈ (E[w⁴] − σ⁴)/σ⁴ / n = (9/5 − 1) / n for a uniform distribution
        rel_se = math.sqrt(0.8 / n)
        assert np.max(np.abs(w)) <= limit
        assert np.max(np.abs(w)) > 0.99 * limit
    else:
        std = math.sqrt((2.0 if name == "he" else 1.0) / fan_in)
        rel_se = math.sqrt(2.0 / (n - 1))  # Var(s²)/σ⁴ = 2/(n − 1) for a normal distribution
    assert abs(float(np.mean(w))) < 4.0 * std / math.sqrt(n)
    assert abs(float(np.var(w)) / std**2 - 1.0) < 4.0 * rel_se


@pytest.mark.parametrize("shape", [(0, 3, 5, 5), (4, 0), (16, 3, 0)], ids=str)
def test_initialising_a_kernel_with_no_elements_is_empty(shape: tuple[int, ...]) -> None:
    """Nothing to draw (a zero fan would divide by zero): an empty array of the shape, where
    PyTorch warns and leaves the tensor alone."""
    for name in ("he", "xavier", "lecun"):
        assert _draw(name, shape, 0).shape == shape
