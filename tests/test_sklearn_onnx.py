"""The estimators to ONNX through skl2onnx: onnxruntime's outputs against ``predict`` and
``predict_proba``, for estimators trained on every row of the backend matrix (the fitted
state is host NumPy whatever the backend; the graph computes in the input's dtype)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sklearn")
skl2onnx = pytest.importorskip("skl2onnx")
ort = pytest.importorskip("onnxruntime")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from nnbackend.sklearn import MLPClassifier, MLPRegressor, register_onnx_converters  # noqa: E402

RNG = np.random.default_rng(7)
X = RNG.normal(size=(61, 5))
SCORE = X[:, 0] - 0.5 * X[:, 1] + 0.3 * RNG.normal(size=61)
TARGETS = {
    "multiclass": np.digitize(SCORE, [-0.5, 0.5]),
    "binary": np.where(SCORE > 0, "yes", "no"),
}


def _tolerance(case: Any, input_dtype: type) -> tuple[float, float]:
    """float64 graphs of float64 estimators agree to rounding; with float32 anywhere (the
    input, or the weights of an estimator trained in float32), float32's 1e-5 / 1e-6."""
    return (1e-10, 1e-12) if input_dtype is np.float64 and case.is_float64 else (1e-5, 1e-6)


@pytest.fixture(scope="module", autouse=True)
def _registered() -> None:
    register_onnx_converters()


def _run(onx: Any, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    return list(session.run(None, {session.get_inputs()[0].name: x}))


def _fit(est: Any, y: np.ndarray) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


@pytest.mark.parametrize("input_dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_classifier_pipeline_matches_predict_proba(case: Any, target: str,
                                                   input_dtype: type) -> None:
    clf = make_pipeline(StandardScaler(), MLPClassifier(
        hidden_layer_sizes=(8, 6), activation="tanh", max_iter=25, random_state=0,
        backend=case.backend, dtype=case.dtype_name))
    _fit(clf, TARGETS[target])
    onx = skl2onnx.to_onnx(clf, X[:1].astype(input_dtype), options={"zipmap": False})
    labels, proba = _run(onx, X.astype(input_dtype))
    expected = clf.predict_proba(X)
    assert proba.shape == expected.shape == (X.shape[0], len(clf.classes_))
    rtol, atol = _tolerance(case, input_dtype)
    np.testing.assert_allclose(proba, expected, rtol=rtol, atol=atol)
    np.testing.assert_array_equal(labels, clf.predict(X))


@pytest.mark.parametrize("input_dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_regressor_matches_predict(case: Any, input_dtype: type) -> None:
    reg = MLPRegressor(hidden_layer_sizes=(9,), max_iter=25, random_state=0,
                       backend=case.backend, dtype=case.dtype_name)
    _fit(reg, SCORE)
    (out,) = _run(skl2onnx.to_onnx(reg, X[:1].astype(input_dtype)), X.astype(input_dtype))
    assert out.shape == (X.shape[0], 1)
    rtol, atol = _tolerance(case, input_dtype)
    np.testing.assert_allclose(out[:, 0], reg.predict(X), rtol=rtol, atol=atol)


@pytest.mark.parametrize(("est", "y", "message"), [
    (MLPRegressor(loss="poisson", max_iter=3), np.abs(SCORE), "output activation 'exp'"),
    (MLPRegressor(max_iter=3), np.stack([SCORE, X[:, 2]], axis=1), "2 outputs"),
    (MLPClassifier(max_iter=3), np.stack([SCORE > 0, X[:, 2] > 0], axis=1).astype(int),
     "multilabel"),
], ids=["poisson", "multi-output", "multilabel"])
def test_what_skl2onnx_cannot_convert_is_refused_by_name(est: Any, y: np.ndarray,
                                                          message: str) -> None:
    _fit(est.set_params(random_state=0), y)
    with pytest.raises(NotImplementedError, match=message):
        skl2onnx.to_onnx(est, X[:1].astype(np.float32))


def test_registration_without_skl2onnx_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "skl2onnx", None)  # import raises ImportError
    with pytest.raises(ImportError, match=r"nnbackend\[sklearn-onnx\]"):
        register_onnx_converters()
