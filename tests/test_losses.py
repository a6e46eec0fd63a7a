"""Losses (functional and objects): values and gradients against closed forms, PyTorch (float64)
and finite differences on the backend matrix; numerical stability; validation of bad input.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any

import _reference as ref
import numpy as np
import pytest

import nnbackend as nb
import nnbackend.functional as F
from nnbackend.backend import is_host_array

N, C = 5, 4


@dataclass(frozen=True)
class Spec:
    """One loss configuration: which function, which kind of target, which options."""

    loss: str  # "mse" | "ce" | "bce"
    target: str  # "values" | "labels" | "onehot" | "soft" | "binary"
    reduction: str = "mean"
    label_smoothing: float = 0.0

    @property
    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reduction": self.reduction}
        if self.loss == "ce":
            out["label_smoothing"] = self.label_smoothing
        return out


SPECS = {
    "mse-mean": Spec("mse", "values"),
    "mse-sum": Spec("mse", "values", "sum"),
    "ce-labels-mean": Spec("ce", "labels"),
    "ce-labels-sum": Spec("ce", "labels", "sum"),
    "ce-onehot": Spec("ce", "onehot"),
    "ce-soft-mean": Spec("ce", "soft"),
    "ce-soft-sum": Spec("ce", "soft", "sum"),
    "ce-labels-smooth": Spec("ce", "labels", label_smoothing=0.2),
    "ce-labels-smooth-sum": Spec("ce", "labels", "sum", label_smoothing=0.1),
    "ce-labels-smooth-1": Spec("ce", "labels", label_smoothing=1.0),
    "ce-soft-smooth": Spec("ce", "soft", label_smoothing=0.3),
    "bce-mean": Spec("bce", "soft"),
    "bce-binary-sum": Spec("bce", "binary", "sum"),
}

FUNCTIONS = {"mse": F.mse, "ce": F.cross_entropy, "bce": F.binary_cross_entropy_with_logits}


def _data(spec: Spec, case: Any, seed: int = 0) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    """Host prediction (rounded to the case's dtype, as float64), host target, and both arrays."""
    rng = np.random.default_rng(seed)
    pred_host = (rng.standard_normal((N, C)) * 2.0).astype(case.dtype_name).astype(np.float64)
    if spec.target == "labels":
        target_host = rng.integers(0, C, size=N)
        target_host[0], target_host[1] = 0, C - 1  # both ends of the range
        return pred_host, target_host, case.asarray(pred_host), case.asarray(target_host,
                                                                              dtype="int64")
    if spec.target == "values":
        target_host = rng.standard_normal((N, C))
    elif spec.target == "onehot":
        target_host = ref.onehot(rng.integers(0, C, size=N), C)
    elif spec.target == "binary":
        target_host = rng.integers(0, 2, size=(N, C)).astype(np.float64)
    else:  # soft probabilities (rows sum to one for ce; any values in [0, 1] for bce)
        target_host = ref.softmax(rng.standard_normal((N, C)))
    target_host = target_host.astype(case.dtype_name).astype(np.float64)
    return pred_host, target_host, case.asarray(pred_host), case.asarray(target_host)


def _reference(spec: Spec, pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    if spec.loss == "mse":
        return ref.mse(pred, target, spec.reduction)
    if spec.loss == "bce":
        return ref.bce_with_logits(pred, target, spec.reduction)
    q = ref.onehot(target, C) if spec.target == "labels" else target
    return ref.cross_entropy(pred, q, spec.reduction, spec.label_smoothing)


def _torch_reference(spec: Spec, pred: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    z = torch.tensor(pred, dtype=torch.float64, requires_grad=True)
    if spec.loss == "mse":
        loss = tf.mse_loss(z, torch.tensor(target), reduction=spec.reduction)
    elif spec.loss == "bce":
        loss = tf.binary_cross_entropy_with_logits(z, torch.tensor(target),
                                                   reduction=spec.reduction)
    else:
        t = torch.tensor(target, dtype=torch.int64 if spec.target == "labels" else torch.float64)
        loss = tf.cross_entropy(z, t, reduction=spec.reduction,
                                label_smoothing=spec.label_smoothing)
    loss.backward()
    return float(loss.detach()), z.grad.numpy()


def _loss_object(spec: Spec) -> nb.Loss:
    if spec.loss == "mse":
        return nb.MSELoss(reduction=spec.reduction)
    if spec.loss == "bce":
        return nb.BCEWithLogitsLoss(reduction=spec.reduction)
    return nb.CrossEntropyLoss(reduction=spec.reduction, label_smoothing=spec.label_smoothing)


def _call(spec: Spec, pred: Any, target: Any) -> tuple[Any, Any]:
    return FUNCTIONS[spec.loss](pred, target, **spec.kwargs)  # type: ignore[operator]


def _check_result(case: Any, loss: Any, grad: Any) -> None:
    """The loss is a 0-d array on the prediction's backend and device; grad too is."""
    case.check_placement(loss)
    assert loss.ndim == 0
    case.check_placement(grad)
    assert tuple(grad.shape) == (N, C)


def _tol(case: Any) -> dict[str, float]:
    return {"rtol": case.rtol, "atol": case.rtol * 1e-2}


@pytest.mark.parametrize("name", list(SPECS))
def test_loss_matches_closed_form(case: Any, name: str) -> None:
    spec = SPECS[name]
    pred_host, target_host, pred, target = _data(spec, case)
    before = (nb.to_numpy(pred).copy(), nb.to_numpy(target).copy())
    loss, grad = _call(spec, pred, target)
    _check_result(case, loss, grad)
    want_loss, want_grad = _reference(spec, pred_host, target_host)
    np.testing.assert_allclose(float(nb.to_numpy(loss)), want_loss, **_tol(case))
    np.testing.assert_allclose(nb.to_numpy(grad), want_grad, **_tol(case))
    # Inputs are never mutated.
    np.testing.assert_array_equal(nb.to_numpy(pred), before[0])
    np.testing.assert_array_equal(nb.to_numpy(target), before[1])


@pytest.mark.parametrize("name", list(SPECS))
def test_loss_matches_torch(case: Any, name: str) -> None:
    spec = SPECS[name]
    pred_host, target_host, pred, target = _data(spec, case, seed=1)
    loss, grad = _call(spec, pred, target)
    want_loss, want_grad = _torch_reference(spec, pred_host, target_host)
    np.testing.assert_allclose(float(nb.to_numpy(loss)), want_loss, **_tol(case))
    np.testing.assert_allclose(nb.to_numpy(grad), want_grad, **_tol(case))


@pytest.mark.parametrize("name", list(SPECS))
def test_loss_gradient_matches_finite_differences(case: Any, name: str) -> None:
    spec = SPECS[name]
    pred_host, target_host, pred, target = _data(spec, case, seed=2)
    _, grad = _call(spec, pred, target)
    numeric = ref.central_difference(lambda v: _reference(spec, v, target_host)[0], pred_host)
    np.testing.assert_allclose(nb.to_numpy(grad), numeric, rtol=max(case.rtol, 1e-6), atol=1e-8)
    if case.is_float64:
        report = nb.gradcheck(lambda p, t: _call(spec, p, t), pred, target)
        assert report.max_abs_error["prediction"] < 1e-8


@pytest.mark.parametrize("name", list(SPECS))
def test_loss_objects_match_functional(case: Any, name: str) -> None:
    spec = SPECS[name]
    _, _, pred, target = _data(spec, case, seed=3)
    loss, grad = _loss_object(spec)(pred, target)
    _check_result(case, loss, grad)
    want_loss, want_grad = _call(spec, pred, target)
    np.testing.assert_array_equal(nb.to_numpy(loss), nb.to_numpy(want_loss))
    np.testing.assert_array_equal(nb.to_numpy(grad), nb.to_numpy(want_grad))


@pytest.mark.parametrize("loss", ["mse", "ce", "bce"])
def test_sum_is_n_times_mean(case: Any, loss: str) -> None:
    spec = Spec(loss, "labels" if loss == "ce" else "soft")
    _, _, pred, target = _data(spec, case, seed=4)
    mean, gmean = FUNCTIONS[loss](pred, target, reduction="mean")  # type: ignore[operator]
    total, gsum = FUNCTIONS[loss](pred, target, reduction="sum")  # type: ignore[operator]
    n = N if loss == "ce" else N * C
    np.testing.assert_allclose(nb.to_numpy(total), n * nb.to_numpy(mean), rtol=case.rtol)
    np.testing.assert_allclose(nb.to_numpy(gsum), n * nb.to_numpy(gmean), rtol=case.rtol)


def test_cross_entropy_onehot_equals_labels(case: Any) -> None:
    _, labels_host, pred, labels = _data(Spec("ce", "labels"), case, seed=5)
    onehot = case.asarray(ref.onehot(labels_host, C))
    for eps in (0.0, 0.25):
        a = F.cross_entropy(pred, labels, label_smoothing=eps)
        b = F.cross_entropy(pred, onehot, label_smoothing=eps)
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(nb.to_numpy(x), nb.to_numpy(y), rtol=case.rtol,
                                       atol=case.rtol * 1e-2)


def test_mse_closed_form_small_example(case: Any) -> None:
    pred = case.asarray(np.array([[1.0, 2.0], [3.0, 4.0]]))
    target = case.asarray(np.array([[1.0, 0.0], [0.0, 4.0]]))
    loss, grad = F.mse(pred, target)
    assert float(nb.to_numpy(loss)) == pytest.approx((4.0 + 9.0) / 4.0)
    np.testing.assert_allclose(nb.to_numpy(grad), [[0.0, 1.0], [1.5, 0.0]])
    loss, grad = F.mse(pred, target, reduction="sum")
    assert float(nb.to_numpy(loss)) == pytest.approx(13.0)
    np.testing.assert_allclose(nb.to_numpy(grad), [[0.0, 4.0], [6.0, 0.0]])


# ----------------------------------------------------------------------- numerical stability


def _huge(case: Any) -> list[float]:
    return [1e4, 1e30] if case.is_float64 else [1e4]


def _quiet() -> Any:
    """Any warning is an error, and so is overflow or an invalid operation on NumPy."""
    class _Ctx:
        def __enter__(self) -> None:
            self.w = warnings.catch_warnings()
            self.w.__enter__()
            warnings.simplefilter("error")
            self.e = np.errstate(over="raise", invalid="raise", divide="raise")
            self.e.__enter__()

        def __exit__(self, *exc: Any) -> None:
            self.e.__exit__(*exc)
            self.w.__exit__(*exc)

    return _Ctx()


@pytest.mark.parametrize("target", ["labels", "soft"])
def test_cross_entropy_huge_logits_are_finite(case: Any, target: str) -> None:
    for big in _huge(case):
        z_host = np.array([[big, -big, 0.0], [-big, big, big], [0.0, 0.0, -big]])
        labels = np.array([1, 0, 2])
        q = ref.onehot(labels, 3) if target == "labels" else np.full((3, 3), 1.0 / 3.0)
        t = case.asarray(labels, dtype="int64") if target == "labels" else case.asarray(q)
        for eps in (0.0, 0.1):
            with _quiet():
                loss, grad = F.cross_entropy(case.asarray(z_host), t, label_smoothing=eps)
            got_loss, got_grad = float(nb.to_numpy(loss)), nb.to_numpy(grad)
            assert np.isfinite(got_loss) and np.all(np.isfinite(got_grad)), (big, eps)
            want_loss, want_grad = ref.cross_entropy(z_host, q, label_smoothing=eps)
            np.testing.assert_allclose(got_loss, want_loss, rtol=case.rtol)
            np.testing.assert_allclose(got_grad, want_grad, rtol=case.rtol, atol=case.rtol)


def test_bce_huge_logits_are_finite(case: Any) -> None:
    for big in _huge(case):
        z_host = np.array([[big, -big], [-big, big]])
        y_host = np.array([[0.0, 0.0], [1.0, 0.5]])
        with _quiet():
            loss, grad = F.binary_cross_entropy_with_logits(case.asarray(z_host),
                                                            case.asarray(y_host))
        got_loss, got_grad = float(nb.to_numpy(loss)), nb.to_numpy(grad)
        assert np.isfinite(got_loss) and np.all(np.isfinite(got_grad))
        # Per element: big, 0, big, big/2; gradient σ(z) − y over n = 4.
        np.testing.assert_allclose(got_loss, 2.5 * big / 4.0, rtol=case.rtol)
        np.testing.assert_allclose(got_grad, [[0.25, 0.0], [-0.25, 0.125]], atol=1e-12)


def test_cross_entropy_confident_and_correct_is_near_zero(case: Any) -> None:
    z = case.asarray(np.array([[50.0, 0.0, 0.0], [0.0, 0.0, 50.0]]))
    loss, grad = F.cross_entropy(z, case.asarray(np.array([0, 2]), dtype="int64"))
    assert 0.0 <= float(nb.to_numpy(loss)) < 1e-20
    assert np.all(np.abs(nb.to_numpy(grad)) < 1e-20)


# ------------------------------------------------------------------ masked logits (−∞), 3.2

INF = float("inf")
MASKED = np.array([[2.0, -INF, 0.5], [0.1, 0.2, -INF]])  # the reproducer


def _masked_reference(z: np.ndarray, q: np.ndarray, reduction: str = "mean",
                      label_smoothing: float = 0.0) -> tuple[float, np.ndarray]:
    """−Σ q log softmax(z) with 0 log 0 = 0, and ∂/∂z = p Σ q − q, in float64 on the host."""
    q = (1.0 - label_smoothing) * q + label_smoothing / z.shape[1]
    log_p = ref.log_softmax(z)  # −∞ where z is −∞
    scale = 1.0 / z.shape[0] if reduction == "mean" else 1.0
    loss = -float((q * np.where(q > 0.0, log_p, 0.0)).sum()) * scale
    grad = (np.exp(log_p) * q.sum(axis=1, keepdims=True) - q) * scale
    return loss, grad


def _torch_cross_entropy(z: np.ndarray, target: np.ndarray,
                         **kwargs: Any) -> tuple[float, np.ndarray]:
    torch = pytest.importorskip("torch")
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    tt = torch.tensor(target, dtype=torch.int64 if target.dtype.kind == "i" else torch.float64)
    loss = torch.nn.functional.cross_entropy(zt, tt, **kwargs)
    loss.backward()
    return float(loss.detach()), zt.grad.numpy()


def _labels(case: Any, labels: list[int]) -> Any:
    return case.asarray(np.array(labels), dtype="int64")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_with_masked_logits_matches_torch(case: Any, reduction: str) -> None:
    """cross_entropy([[2, −∞, .5], [.1, .2, −∞]], [0, 1]) was NaN (0 · −∞ in Σ q log p);
    PyTorch gives 0.4229 (mean), and a finite gradient with 0 on the masked logits."""
    with _quiet():
        loss, grad = F.cross_entropy(case.asarray(MASKED), _labels(case, [0, 1]),
                                     reduction=reduction)
    got_loss, got_grad = float(case.backend.to_numpy(loss)), case.backend.to_numpy(grad)
    want_loss, want_grad = _torch_cross_entropy(MASKED, np.array([0, 1]), reduction=reduction)
    assert want_loss == pytest.approx(0.42290496902816 * (2 if reduction == "sum" else 1))
    np.testing.assert_allclose(got_loss, want_loss, rtol=case.rtol)
    np.testing.assert_allclose(got_grad, want_grad, rtol=case.rtol, atol=case.rtol * 1e-2)
    assert got_grad[0, 1] == 0.0 and got_grad[1, 2] == 0.0


def test_cross_entropy_masked_logits_with_probability_targets(case: Any) -> None:
    """Soft targets that put no mass on a masked logit: finite loss and gradient (the math says
    so; PyTorch gives NaN), equal to the closed form with 0 log 0 = 0."""
    q = np.array([[0.7, 0.0, 0.3], [0.5, 0.5, 0.0]])
    with _quiet():
        loss, grad = F.cross_entropy(case.asarray(MASKED), case.asarray(q))
    got_loss, got_grad = float(case.backend.to_numpy(loss)), case.backend.to_numpy(grad)
    want_loss, want_grad = _masked_reference(MASKED, q)
    assert np.isfinite(want_loss)
    np.testing.assert_allclose(got_loss, want_loss, rtol=case.rtol)
    np.testing.assert_allclose(got_grad, want_grad, rtol=case.rtol, atol=case.rtol * 1e-2)
    assert np.isnan(_torch_cross_entropy(MASKED, q)[0])  # PyTorch's NaN, for the record
    # The same loss as integer labels where the soft target is one-hot
    onehot = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    from_labels = F.cross_entropy(case.asarray(MASKED), _labels(case, [0, 1]))[0]
    from_onehot = F.cross_entropy(case.asarray(MASKED), case.asarray(onehot))[0]
    np.testing.assert_allclose(float(case.backend.to_numpy(from_onehot)),
                               float(case.backend.to_numpy(from_labels)), rtol=case.rtol)


@pytest.mark.parametrize("kind", ["label", "soft", "smoothing"])
def test_cross_entropy_mass_on_a_masked_logit_is_infinite(case: Any, kind: str) -> None:
    """A label, a soft target or label smoothing that puts mass on a −∞ logit: loss +∞, as in
    PyTorch; the gradient p Σ q − q stays finite and equals PyTorch's."""
    kwargs: dict[str, Any] = {}
    if kind == "label":
        target_host: np.ndarray = np.array([1, 1])  # sample 0's label is masked
        target = _labels(case, [1, 1])
        q = ref.onehot(target_host, 3)
    elif kind == "soft":
        target_host = q = np.array([[0.7, 0.1, 0.2], [0.5, 0.5, 0.0]])
        target = case.asarray(q)
    else:
        target_host = np.array([0, 1])
        target, q = _labels(case, [0, 1]), ref.onehot(target_host, 3)
        kwargs["label_smoothing"] = 0.1
    with _quiet():
        loss, grad = F.cross_entropy(case.asarray(MASKED), target, **kwargs)
    got_grad = case.backend.to_numpy(grad)
    assert float(case.backend.to_numpy(loss)) == INF
    _, want_grad = _masked_reference(MASKED, q, **kwargs)
    np.testing.assert_allclose(got_grad, want_grad, rtol=case.rtol, atol=case.rtol * 1e-2)
    torch_loss, torch_grad = _torch_cross_entropy(MASKED, target_host, **kwargs)
    if kind != "soft":  # PyTorch: NaN for soft targets with any masked logit
        assert torch_loss == INF
    np.testing.assert_allclose(got_grad, torch_grad, rtol=case.rtol, atol=case.rtol * 1e-2)


# ------------------------------------------------------------------------------- bad input


def _logits(case: Any) -> Any:
    return case.asarray(np.random.default_rng(9).standard_normal((3, 4)))


@pytest.mark.parametrize("labels", [[0, 4, 1], [0, -1, 1], [7, 0, 0]])
def test_labels_out_of_range(case: Any, labels: list[int]) -> None:
    """Host labels raise; labels on a device (where the check would stall it) make the loss
    and the invalid samples' gradient rows NaN, the valid rows' gradient unchanged."""
    z = _logits(case)
    target = case.asarray(np.array(labels), dtype="int64")
    if not is_host_array(target):
        loss, grad = F.cross_entropy(z, target)
        assert np.isnan(float(case.backend.to_numpy(loss)))
        got = case.backend.to_numpy(grad)
        bad = (np.array(labels) < 0) | (np.array(labels) >= 4)
        assert np.isnan(got[bad]).all() and np.isfinite(got[~bad]).all()
        z_host = case.backend.to_numpy(z).astype(np.float64)
        want = (ref.softmax(z_host) - ref.onehot(np.where(bad, 0, labels), 4)) / 3
        np.testing.assert_allclose(got[~bad], want[~bad], rtol=case.rtol)
        return
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\).*4 classes") as info:
        F.cross_entropy(z, target)
    assert f"from {min(labels)} to {max(labels)}" in str(info.value)


def test_labels_in_range_in_a_float32_batch_over_2_to_24_rows(case: Any) -> None:
    """3.10: the range check summed a float32 one-hot, which stops counting at 2**24, so every
    label of a batch of 2**24 + 1 rows was reported out of range. (64 MB of logits, ~0.3 s.)"""
    if case.is_float64:
        pytest.skip("float64 counts exactly to 2**53 rows; the defect is float32's")
    if not is_host_array(case.asarray(np.zeros(1, dtype=np.uint8), dtype="uint8")):
        pytest.skip("device labels are not range-checked (test_labels_out_of_range: NaN rows)")
    n = 2**24 + 1
    xp = case.xp
    logits = case.backend.zeros((n, 1), dtype=case.dtype)
    labels = np.zeros(n, dtype=np.uint8)
    loss, grad = F.cross_entropy(logits, case.asarray(labels, dtype="uint8"))
    assert float(case.backend.to_numpy(loss)) == 0.0  # one class: log softmax = 0
    assert float(case.backend.to_numpy(xp.max(xp.abs(grad)))) == 0.0
    labels[-1] = 1  # out of range for one class: still found, still named
    with pytest.raises(ValueError, match=r"lie in \[0, 1\).*got labels from 0 to 1"):
        F.cross_entropy(logits, case.asarray(labels, dtype="uint8"))


def test_float_labels_of_shape_n_are_rejected(case: Any) -> None:
    with pytest.raises(ValueError, match=r"probability targets must have the logits' shape "
                                         r"\(3, 4\), got \(3,\).*integer labels"):
        F.cross_entropy(_logits(case), case.asarray(np.array([0.0, 1.0, 2.0])))


def test_bool_labels_are_rejected(case: Any) -> None:
    with pytest.raises(TypeError, match="bool"):
        F.cross_entropy(_logits(case), case.asarray(np.array([True, False, True]), dtype="bool"))


def test_probability_targets_of_wrong_shape(case: Any) -> None:
    with pytest.raises(ValueError, match=r"logits' shape \(3, 4\), got \(3, 5\)"):
        F.cross_entropy(_logits(case), case.asarray(np.full((3, 5), 0.2)))


def test_labels_of_wrong_shape(case: Any) -> None:
    for bad in (np.array([0, 1]), np.array([[0], [1], [2]])):
        with pytest.raises(ValueError, match=r"integer labels must have shape \(N,\) = \(3,\)"):
            F.cross_entropy(_logits(case), case.asarray(bad, dtype="int64"))


def test_logits_must_be_2d_and_floating(case: Any) -> None:
    with pytest.raises(ValueError, match=r"shape \(N, C\) with C >= 1, got \(4,\)"):
        F.cross_entropy(case.asarray(np.zeros(4)), case.asarray(np.zeros(4)))
    with pytest.raises(TypeError, match="logits must have a floating dtype"):
        F.cross_entropy(case.asarray(np.zeros((3, 4)), dtype="int64"),
                        case.asarray(np.zeros(3), dtype="int64"))


def _other_dtype(case: Any) -> str:
    return "float32" if case.is_float64 else "float64"


@pytest.mark.parametrize("loss", ["mse", "ce", "bce"])
def test_mismatched_target_dtype(case: Any, loss: str) -> None:
    other = _other_dtype(case)
    if other == "float64" and not case.has_float64:
        other_backend = nb.get_backend("numpy")  # no float64 there: a float64 host array
        target = other_backend.asarray(np.full((3, 4), 0.25), dtype=other)
        match = "target is numpy"
        err: type[Exception] = ValueError
    else:
        target = case.backend.asarray(np.full((3, 4), 0.25), dtype=other)
        match = f"target dtype .*{other}.* differs from the prediction's"
        err = TypeError
    with pytest.raises(err, match=match):
        FUNCTIONS[loss](_logits(case), target)  # type: ignore[operator]


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_elementwise_losses_validate_target(case: Any, loss: str) -> None:
    fn = FUNCTIONS[loss]
    with pytest.raises(ValueError, match=r"prediction has shape \(3, 4\) but target has shape "
                                         r"\(4, 3\)"):
        fn(_logits(case), case.asarray(np.zeros((4, 3))))  # type: ignore[operator]
    with pytest.raises(TypeError, match="target must have a floating dtype"):
        fn(_logits(case), case.asarray(np.zeros((3, 4)), dtype="int64"))  # type: ignore[operator]
    with pytest.raises(TypeError, match="prediction must have a floating dtype"):
        fn(case.asarray(np.zeros((3, 4)), dtype="int64"),  # type: ignore[operator]
           case.asarray(np.zeros((3, 4))))
    with pytest.raises(TypeError, match="target must be an array, got list"):
        fn(_logits(case), [[0.0] * 4] * 3)  # type: ignore[operator]


@pytest.mark.parametrize("loss", ["mse", "ce", "bce"])
def test_bad_reduction(case: Any, loss: str) -> None:
    target = (case.asarray(np.array([0, 1, 2]), dtype="int64") if loss == "ce"
              else case.asarray(np.zeros((3, 4))))
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum', got 'none'"):
        FUNCTIONS[loss](_logits(case), target, reduction="none")  # type: ignore[operator]


@pytest.mark.parametrize("eps", [-0.1, 1.5, float("nan")])
def test_label_smoothing_out_of_range(case: Any, eps: float) -> None:
    with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0, 1\]"):
        F.cross_entropy(_logits(case), case.asarray(np.array([0, 1, 2]), dtype="int64"),
                        label_smoothing=eps)
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: label_smoothing must lie in"):
        nb.CrossEntropyLoss(label_smoothing=eps)


def test_target_on_another_backend(case: Any) -> None:
    import array_api_strict

    other = (nb.get_backend("numpy") if case.backend.name != "numpy" else
             nb.get_backend(array_api_strict, device=array_api_strict.Device("device1")))
    labels = other.asarray(np.array([0, 1, 2]), dtype="int64")
    with pytest.raises(ValueError, match=r"target is .* but logits is"):
        F.cross_entropy(_logits(case), labels)
    with pytest.raises(ValueError, match=r"target is .* but prediction is"):
        F.mse(_logits(case), other.asarray(np.zeros((3, 4)), dtype=case.dtype_name))


def test_loss_object_validation_and_repr() -> None:
    for cls in (nb.MSELoss, nb.CrossEntropyLoss, nb.BCEWithLogitsLoss):
        with pytest.raises(ValueError, match=f"{cls.__name__}: reduction must be 'mean' or "
                                             "'sum', got 'avg'"):
            cls(reduction="avg")
    assert repr(nb.MSELoss()) == "MSELoss(reduction='mean')"
    assert repr(nb.BCEWithLogitsLoss(reduction="sum")) == "BCEWithLogitsLoss(reduction='sum')"
    assert (repr(nb.CrossEntropyLoss(label_smoothing=0.1))
            == "CrossEntropyLoss(reduction='mean', label_smoothing=0.1)")


@pytest.mark.parametrize("value", ["0.1", None, True, [0.1], np.array([0.1])])
def test_label_smoothing_of_the_wrong_type_names_argument_and_value(value: Any) -> None:
    """3.13: CrossEntropyLoss(label_smoothing="0.1") failed comparing str with float."""
    shown = re.escape(repr(value))
    with pytest.raises(TypeError, match=rf"^CrossEntropyLoss: label_smoothing must be a real "
                                        rf"number in \[0, 1\], got {shown} of type "
                                        rf"{type(value).__name__}$"):
        nb.CrossEntropyLoss(label_smoothing=value)
    with pytest.raises(TypeError, match=rf"^cross_entropy: label_smoothing .*got {shown}"):
        F.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), label_smoothing=value)


def test_label_smoothing_accepts_any_real_number() -> None:
    for value in (0, 1, np.float32(0.25), np.float64(0.5), 0.1):
        assert nb.CrossEntropyLoss(label_smoothing=value).label_smoothing == float(value)
    assert type(nb.CrossEntropyLoss(label_smoothing=np.float32(0.25)).label_smoothing) is float


@pytest.mark.parametrize("value", [None, 1, b"mean", ("mean",)])
def test_reduction_of_the_wrong_type_names_argument_and_value(value: Any) -> None:
    shown = re.escape(repr(value))
    for cls in (nb.MSELoss, nb.CrossEntropyLoss, nb.BCEWithLogitsLoss):
        with pytest.raises(TypeError, match=rf"^{cls.__name__}: reduction must be the string "
                                            rf"'mean' or 'sum', got {shown} of type "
                                            rf"{type(value).__name__}$"):
            cls(reduction=value)
    z = np.zeros((2, 3))
    for name, fn, target in (("mse", F.mse, z), ("cross_entropy", F.cross_entropy,
                                                 np.array([0, 1])),
                             ("binary_cross_entropy_with_logits",
                              F.binary_cross_entropy_with_logits, z)):
        with pytest.raises(TypeError, match=rf"^{name}: reduction must be the string .*{shown}"):
            fn(z, target, reduction=value)  # type: ignore[operator]


@pytest.mark.parametrize("name", ["mse", "bce", "ce-labels"])
def test_mean_over_empty_batch_is_a_clear_error(name: str) -> None:
    logits = np.zeros((0, 3), dtype=np.float32)
    target = np.zeros((0,), dtype=np.int64) if name == "ce-labels" else logits
    fn = {"mse": F.mse, "bce": F.binary_cross_entropy_with_logits,
          "ce-labels": F.cross_entropy}[name]
    with pytest.raises(ValueError, match="empty batch"):
        fn(logits, target)
    loss, grad = fn(logits, target, reduction="sum")
    assert float(loss) == 0.0
    assert grad.shape == (0, 3)


def test_boolean_labels_are_rejected() -> None:
    with pytest.raises(TypeError, match="class labels must be integers, got dtype bool"):
        F.cross_entropy(np.zeros((2, 3), dtype=np.float32), np.array([True, False]))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16])
def test_narrow_integer_labels_with_more_classes_than_they_count(dtype: type) -> None:
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((3, 300)).astype(np.float32)
    labels = np.array([5, 7, 100], dtype=dtype)
    loss, grad = F.cross_entropy(logits, labels)
    want_loss, want_grad = F.cross_entropy(logits, labels.astype(np.int64))
    np.testing.assert_array_equal(np.asarray(loss), np.asarray(want_loss))
    np.testing.assert_array_equal(grad, want_grad)


def test_logits_without_classes_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"shape \(N, C\) with C >= 1, got \(2, 0\)"):
        F.cross_entropy(np.zeros((2, 0), dtype=np.float32), np.zeros(2, dtype=np.int64))


def test_device_labels_out_of_range_poison_their_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the labels live on an accelerator the range check would stall the device, so the
    loss and the invalid samples' gradient rows become NaN instead (simulated on NumPy)."""
    import nnbackend.functional.losses as losses_module

    monkeypatch.setattr(losses_module, "is_host_array", lambda _: False)
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((4, 3))
    labels = np.array([0, 3, 2, -1])
    loss, grad = F.cross_entropy(logits, labels)
    assert np.isnan(loss)
    assert np.isnan(grad[[1, 3]]).all()
    expected = (ref.softmax(logits[[0, 2]]) - ref.onehot([0, 2], 3)) / 4  # the valid rows
    np.testing.assert_allclose(grad[[0, 2]], expected, rtol=1e-12)
    valid_loss, _ = F.cross_entropy(logits, np.array([0, 1, 2, 0]))
    assert np.isfinite(valid_loss)
