"""nnbackend.sklearn's MLPClassifier and MLPRegressor against scikit-learn's own MLP.

The estimators draw their initial weights, shuffles and early-stopping splits exactly as
scikit-learn's do from the same ``random_state``, so with equal settings the two train along the
same trajectory: the loss curves, weights and predictions agree to rounding (1e-10 in float64 on
NumPy) for every solver, schedule, output and option compared here. The other tests cover the
scikit-learn API (Pipeline, GridSearchCV, cross_val_score, clone, pickle), Array API dispatch on
the backend matrix (the ``case`` fixture) and the errors.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn import config_context  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import nnbackend as nb  # noqa: E402
from nnbackend._libraries import library_of  # noqa: E402
from nnbackend.sklearn import MLPClassifier, MLPRegressor  # noqa: E402
from nnbackend.sklearn._network import (  # noqa: E402
    HIDDEN_ACTIVATIONS,
    TrainingPasses,
    build_network,
    init_coefs,
    linear_layers,
)
from nnbackend.testing import count_host_reads  # noqa: E402

RTOL, ATOL = 1e-10, 1e-12


def _data(n: int = 67, features: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features))
    score = X[:, 0] - 0.5 * X[:, 1] + 0.3 * rng.normal(size=n)
    return {
        "X": X,
        "multiclass": np.digitize(score, [-0.5, 0.5]),  # 3 classes
        "binary": np.where(score > 0, "yes", "no"),
        "multilabel": np.stack([score > 0, X[:, 2] > 0, X[:, 3] > 0.5], axis=1).astype(int),
        "regression": np.stack([score, X[:, 2] * X[:, 3]], axis=1),
        "single": score,
        "counts": rng.poisson(np.exp(0.5 * X[:, 0])).astype(float),
        "weights": rng.uniform(0.2, 2.0, size=n),
    }


DATA = _data()

# (estimator, target, fit keywords, constructor keywords): one row per feature compared
TRAJECTORIES: list[tuple[str, str, bool, dict[str, Any]]] = [
    ("classifier", "multiclass", False,
     dict(solver="adam", alpha=1e-2, batch_size=16, hidden_layer_sizes=(7, 4))),
    ("classifier", "multiclass", False,
     dict(solver="sgd", alpha=1e-3, learning_rate_init=0.1, momentum=0.9,
          nesterovs_momentum=True, learning_rate="invscaling", power_t=0.3, batch_size=20)),
    ("classifier", "binary", False,
     dict(solver="sgd", nesterovs_momentum=False, learning_rate="adaptive",
          learning_rate_init=0.2, tol=0.5, n_iter_no_change=1, max_iter=9, batch_size=10)),
    ("classifier", "multilabel", False, dict(solver="adam", activation="logistic", alpha=0.1)),
    ("classifier", "multiclass", False,
     dict(solver="adam", activation="tanh", early_stopping=True, validation_fraction=0.25,
          learning_rate_init=0.01, n_iter_no_change=2, max_iter=12, batch_size=8)),
    ("classifier", "multiclass", True,
     dict(solver="sgd", momentum=0.5, learning_rate_init=0.05, batch_size=13)),
    ("regressor", "regression", False,
     dict(solver="adam", activation="identity", alpha=1e-2, learning_rate_init=0.01)),
    ("regressor", "single", True,
     dict(solver="sgd", learning_rate_init=0.01, early_stopping=True, validation_fraction=0.3,
          batch_size=9, max_iter=10)),
    ("regressor", "counts", False,
     dict(loss="poisson", solver="adam", learning_rate_init=0.01, shuffle=False, batch_size=30)),
    ("regressor", "regression", True, dict(solver="adam", alpha=0.5, batch_size=25)),
]


def _pair(kind: str, **params: Any) -> tuple[Any, Any]:
    ours = MLPClassifier if kind == "classifier" else MLPRegressor
    theirs = SkClassifier if kind == "classifier" else SkRegressor
    return ours(**params), theirs(**params)


def _fit_recording(est: Any, *args: Any, method: str = "fit", **kwargs: Any) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        getattr(est, method)(*args, **kwargs)
    return [f"{w.category.__name__}: {w.message}" for w in caught]


def _assert_same_state(ours: Any, theirs: Any, X: np.ndarray) -> None:
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_,
                    strict=True):
        assert isinstance(a, np.ndarray) and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
    for name in ("n_iter_", "t_", "n_layers_", "n_outputs_", "out_activation_",
                 "n_features_in_"):
        assert getattr(ours, name) == getattr(theirs, name), name
    if hasattr(theirs, "loss_curve_"):
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=RTOL)
        for name in ("validation_scores_", "best_loss_", "best_validation_score_"):
            a, b = getattr(ours, name), getattr(theirs, name)
            assert (a is None) == (b is None), name
            if b is not None:
                np.testing.assert_allclose(a, b, rtol=RTOL, err_msg=name)
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=RTOL)
    if hasattr(theirs, "predict_proba"):
        np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-9,
                                   atol=ATOL)
        np.testing.assert_array_equal(ours.classes_, theirs.classes_)
        np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    else:
        np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-9, atol=ATOL)


@pytest.mark.parametrize(("kind", "target", "weighted", "params"), TRAJECTORIES,
                         ids=[f"{k}-{t}-{p.get('solver')}" for k, t, _, p in TRAJECTORIES])
def test_same_trajectory_as_sklearn(kind: str, target: str, weighted: bool,
                                    params: dict[str, Any]) -> None:
    params = {"max_iter": 6, "random_state": 3, **params}
    ours, theirs = _pair(kind, **params)
    X, y = DATA["X"], DATA[target]
    fit = {"sample_weight": DATA["weights"]} if weighted else {}
    ours_warnings = _fit_recording(ours, X, y, **fit)
    assert ours_warnings == _fit_recording(theirs, X, y, **fit)
    _assert_same_state(ours, theirs, X)
    if ours.solver != "lbfgs":  # the backward wrote every gradient into its flat buffer view
        assert ours._live.optimizer.path_stats.copied_grads == 0


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_lbfgs_in_float32_follows_the_float64_fit(kind: str) -> None:
    """SciPy iterates in float64; a float32 network takes each iterate in its own dtype, and
    a float32 fit ends close to the float64 one."""
    params = dict(solver="lbfgs", max_iter=15, alpha=1e-2, random_state=0,
                  hidden_layer_sizes=(6,))
    ours = MLPClassifier if kind == "classifier" else MLPRegressor
    single, double = ours(dtype="float32", **params), ours(**params)
    y = DATA["multiclass" if kind == "classifier" else "single"]
    for est in (single, double):
        _fit_recording(est, DATA["X"], y)
    assert all(a.dtype == np.float32 for a in single.coefs_ + single.intercepts_)
    for a, b in zip(single.coefs_ + single.intercepts_, double.coefs_ + double.intercepts_,
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    assert single.loss_ == pytest.approx(double.loss_, rel=1e-4)


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_lbfgs_as_sklearn(kind: str) -> None:
    ours, theirs = _pair(kind, solver="lbfgs", max_iter=15, alpha=1e-2, random_state=0,
                         hidden_layer_sizes=(6,))
    y = DATA["multiclass" if kind == "classifier" else "single"]
    assert _fit_recording(ours, DATA["X"], y) == _fit_recording(theirs, DATA["X"], y)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_,
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-8)
    assert not hasattr(ours, "partial_fit")  # as scikit-learn's: stochastic solvers only


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_partial_fit_and_warm_start_as_sklearn(solver: str) -> None:
    X, y = DATA["X"], DATA["multiclass"]
    params = dict(solver=solver, random_state=5, learning_rate_init=0.05, batch_size=16)
    ours, theirs = _pair("classifier", **params)
    for start in (0, 20, 40):  # the optimizer's state carries over from call to call
        rows = slice(start, start + 27)
        for est in (ours, theirs):
            est.partial_fit(X[rows], y[rows], classes=[0, 1, 2])
        _assert_same_state(ours, theirs, X)
    # warm_start: fit again from the current weights, with a new optimizer; weights given by
    # assignment are taken up
    ours, theirs = _pair("regressor", max_iter=3, warm_start=True, **params)
    for est in (ours, theirs):
        _fit_recording(est, X, DATA["single"])
    ours.coefs_ = [c * 0.5 for c in theirs.coefs_]
    theirs.coefs_ = [c * 0.5 for c in theirs.coefs_]
    for est in (ours, theirs):
        _fit_recording(est, X, DATA["single"])
    _assert_same_state(ours, theirs, X)


def test_binary_multilabel_and_string_labels() -> None:
    X = DATA["X"]
    binary = MLPClassifier(max_iter=5, random_state=0)
    _fit_recording(binary, X, DATA["binary"])
    assert binary.n_outputs_ == 1 and binary.out_activation_ == "logistic"
    proba = binary.predict_proba(X)
    assert proba.shape == (X.shape[0], 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert set(binary.predict(X)) <= {"no", "yes"}
    multilabel = MLPClassifier(max_iter=5, random_state=0)
    _fit_recording(multilabel, X, DATA["multilabel"])
    assert multilabel.predict(X).shape == DATA["multilabel"].shape
    assert 0.0 <= multilabel.score(X, DATA["multilabel"]) <= 1.0


def test_pipeline_grid_search_cross_val_score_clone() -> None:
    X, y = DATA["X"], DATA["multiclass"]
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=4, random_state=0,
                                                         hidden_layer_sizes=(5,)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(pipe, X, y, cv=3)
        search = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-1]}, cv=2).fit(X, y)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    assert search.best_params_["mlpclassifier__alpha"] in (1e-4, 1e-1)
    backend = nb.get_backend("gpulike:1")
    est = MLPRegressor(backend=backend, alpha=0.3)
    copy = clone(est)
    assert copy.backend is backend and copy.get_params() == est.get_params()


def test_a_batch_whose_weights_sum_to_zero_is_refused_by_name() -> None:
    weights = np.zeros(DATA["X"].shape[0])
    weights[0] = 1.0  # batches of 2: all but one have no weight
    est = MLPRegressor(batch_size=2, max_iter=2, random_state=0)
    with pytest.raises(ValueError, match=r"sample weights of batch \d+ of epoch 1 .* sum to 0"):
        est.fit(DATA["X"], DATA["single"], sample_weight=weights)


def test_an_optimizer_state_that_does_not_fit_is_refused_and_kept() -> None:
    """A pickled optimizer state that does not fit the network (here: two parameter groups for
    the one the solver builds) stops partial_fit with a message, every time: it is dropped only
    once it has loaded, never silently replaced by fresh moments."""
    X, y = DATA["X"], DATA["multiclass"]
    est = MLPClassifier(random_state=0, batch_size=20).partial_fit(X, y, classes=[0, 1, 2])
    loaded = pickle.loads(pickle.dumps(est))
    saved = loaded._optimizer_state
    group = saved["param_groups"][0]
    half = len(group["params"]) // 2
    saved["param_groups"] = [{**group, "params": group["params"][:half]},
                             {**group, "params": group["params"][half:]}]
    for _ in range(2):
        with pytest.raises(ValueError, match="optimizer state this estimator holds does not fit"):
            loaded.partial_fit(X, y)


def test_pickle_round_trip_keeps_host_state_and_optimizer() -> None:
    X, y = DATA["X"], DATA["multiclass"]
    backend = nb.get_backend("gpulike:1")
    est = MLPClassifier(backend=backend, random_state=0, batch_size=20)
    est.partial_fit(X, y, classes=[0, 1, 2])
    blob = pickle.dumps(est)
    loaded = pickle.loads(blob)
    assert loaded.backend == backend  # found again from its name and device
    assert all(isinstance(c, np.ndarray) for c in loaded.coefs_ + loaded.intercepts_)
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    for model in (est, loaded):  # Adam's moments travel with the pickle
        model.partial_fit(X, y)
    for a, b in zip(est.coefs_, loaded.coefs_, strict=True):
        np.testing.assert_array_equal(a, b)


def _dispatch_fit(case: Any, max_iter: int) -> tuple[Any, Any, Any]:
    X = case.asarray(DATA["X"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with config_context(array_api_dispatch=True), count_host_reads() as reads:
            clf = MLPClassifier(max_iter=max_iter, random_state=0, dtype=case.dtype_name,
                                alpha=1e-2, batch_size=34)
            clf.fit(X, case.asarray(DATA["multiclass"], dtype=case.backend.index_dtype))
    return clf, X, reads


def test_array_api_dispatch_trains_and_predicts_on_the_inputs_backend(case: Any) -> None:
    clf, X, reads = _dispatch_fit(case, max_iter=3)
    reference = MLPClassifier(max_iter=3, random_state=0, alpha=1e-2, batch_size=34)
    _fit_recording(reference, DATA["X"], DATA["multiclass"])
    with config_context(array_api_dispatch=True):
        proba = clf.predict_proba(X)
        labels = clf.predict(X)
        reg = MLPRegressor(max_iter=2, random_state=0, dtype=case.dtype_name)
        _fit_recording(reg, X, case.asarray(DATA["single"]))
        prediction = reg.predict(X)
    case.check_placement(proba)
    case.check_placement(prediction)
    case.check_placement(labels, dtype=case.index_dtype_name)
    tol = 1e-10 if case.is_float64 else 1e-4
    np.testing.assert_allclose(nb.to_numpy(proba), reference.predict_proba(DATA["X"]),
                               rtol=tol, atol=tol)
    assert clf._backend_spec[0] == case.backend.name
    if case.backend.name == "gpulike":  # one read per epoch: the epoch's loss
        _, _, more = _dispatch_fit(case, max_iter=6)
        assert more.count - reads.count == 3, more.reads


@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_training_passes_give_the_networks_outputs_and_gradients(case: Any,
                                                                 activation: str) -> None:
    """The estimators' training passes (the ReLU and its mask in place on NumPy) give the
    Sequential's own outputs and gradients, on every row, for each activation; a second
    backward assigns the same gradients again (they are overwritten, not accumulated: the step
    runs no zero_grad); the penalty adds c W to each weight's gradient and returns Σ‖W‖²; the
    inputs and the upstream gradient are left as they were."""
    coefs, intercepts = init_coefs([5, 7, 4, 3], activation, np.random.RandomState(1),
                                   np.dtype(case.dtype_name))
    rng = np.random.default_rng(2)
    x_host, delta_host = rng.standard_normal((6, 5)), rng.standard_normal((6, 3))
    x, delta = case.asarray(x_host), case.asarray(delta_host)
    reference, ours = (build_network(coefs, intercepts, activation, case.backend,
                                     case.dtype_name) for _ in range(2))
    z, backprop = reference.forward(x, input_grad=False)
    backprop(delta)
    nb.SGD(list(ours.parameters()), lr=0.1)  # packs the parameters into an arena, as a fit's
    # the gradients are the flat buffers' views where the library writes products into arrays
    in_buffers = library_of(case.xp).native is not None and all(
        p.slot is not None for p in ours.parameters())
    passes = TrainingPasses(linear_layers(ours), activation, case.xp)
    tol = {"rtol": case.rtol, "atol": case.rtol}
    for _ in range(2):
        values = passes.forward(x)
        passes.backward(values, delta)
        if in_buffers:
            assert all(p.grad is p.slot.grad for p in ours.parameters())
        case.check_placement(values[-1])
        np.testing.assert_allclose(nb.to_numpy(values[-1]), nb.to_numpy(z), **tol)
        for (name, want), got in zip(reference.named_parameters(), ours.parameters(),
                                     strict=True):
            assert got.grad is not None, name
            case.check_placement(got.grad)
            np.testing.assert_allclose(nb.to_numpy(got.grad), nb.to_numpy(want.grad), **tol,
                                       err_msg=name)
    squares = passes.penalize(0.25)
    if in_buffers:
        assert all(p.grad is p.slot.grad for p in ours.parameters())
    case.check_placement(squares)
    np.testing.assert_allclose(float(nb.to_numpy(squares)),
                               sum(float(np.sum(c.astype(np.float64) ** 2)) for c in coefs),
                               **tol)
    for (name, want), got in zip(reference.named_parameters(), ours.parameters(), strict=True):
        expected = nb.to_numpy(want.grad) + (0.25 * nb.to_numpy(want.data) if "weight" in name
                                             else 0.0)
        np.testing.assert_allclose(nb.to_numpy(got.grad), expected, **tol, err_msg=name)
    for given, host in ((x, x_host), (delta, delta_host)):
        np.testing.assert_array_equal(nb.to_numpy(given), nb.to_numpy(case.asarray(host)))


def test_backend_parameter_moves_host_data(case: Any) -> None:
    reg = MLPRegressor(backend=case.backend, dtype=case.dtype_name, max_iter=3, random_state=0,
                       solver="sgd", learning_rate_init=0.01)
    reference = MLPRegressor(max_iter=3, random_state=0, solver="sgd", learning_rate_init=0.01)
    for est in (reg, reference):
        _fit_recording(est, DATA["X"], DATA["regression"])
    prediction = reg.predict(DATA["X"])
    assert isinstance(prediction, np.ndarray)  # host in, host out
    tol = 1e-10 if case.is_float64 else 1e-4
    np.testing.assert_allclose(prediction, reference.predict(DATA["X"]), rtol=tol, atol=tol)
    again = pickle.loads(pickle.dumps(reg))
    np.testing.assert_allclose(again.predict(DATA["X"]), prediction, rtol=tol, atol=tol)


def test_errors_name_what_is_wrong() -> None:
    X, y = DATA["X"], DATA["multiclass"]
    with pytest.raises(ValueError, match="hidden_layer_sizes must be > 0"):
        MLPClassifier(hidden_layer_sizes=(3, 0)).fit(X, y)
    with pytest.raises(ValueError, match="'momentum' parameter of MLPClassifier"):
        MLPClassifier(momentum=1.0).fit(X, y)
    with pytest.raises(ValueError, match="'dtype' parameter of MLPRegressor"):
        MLPRegressor(dtype="float16").fit(X, y)
    with pytest.raises(ValueError, match="not a known backend"):
        MLPRegressor(backend="nope").fit(X, y)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        MLPClassifier().partial_fit(X, y)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        MLPRegressor(early_stopping=True).partial_fit(X, DATA["single"])
    with pytest.raises(ValueError, match="needs targets y >= 0"):
        MLPRegressor(loss="poisson").fit(X, -DATA["counts"] - 1)
    with pytest.raises(ValueError, match="validation set is too small"):
        MLPRegressor(early_stopping=True, validation_fraction=0.01).fit(X, DATA["single"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = MLPRegressor(max_iter=1).fit(X, DATA["single"])
    with pytest.raises(ValueError, match="X has 4 features, but MLPRegressor is expecting 5"):
        fitted.predict(X[:, :4])
    with pytest.raises(ValueError, match="Input X contains NaN"):
        MLPRegressor().fit(np.where(X > 2, np.nan, X), DATA["single"])
    with pytest.raises(ValueError, match=r"sample_weight.shape == \(3,\), expected \(67,\)"):
        MLPRegressor().fit(X, DATA["single"], sample_weight=np.ones(3))


def test_float64_where_the_backend_has_none(case: Any) -> None:
    if case.has_float64:
        pytest.skip(f"{case.id} has float64")
    X = case.asarray(DATA["X"])
    with (config_context(array_api_dispatch=True),
          pytest.raises(ValueError, match="dtype='float32'")):
        MLPRegressor(max_iter=1).fit(X, case.asarray(DATA["single"]))


def test_import_nnbackend_does_not_import_sklearn() -> None:
    code = "import sys, nnbackend; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_verbose_prints_what_sklearn_prints(capsys: pytest.CaptureFixture[str]) -> None:
    params = dict(verbose=True, early_stopping=True, max_iter=30, n_iter_no_change=2,
                  random_state=1, solver="sgd", learning_rate="adaptive", tol=0.05)
    printed = []
    for est in _pair("classifier", **params):
        _fit_recording(est, DATA["X"], DATA["multiclass"])
        printed.append(capsys.readouterr().out)
    assert "Validation score" in printed[1] and "Setting learning rate" in printed[1]
    assert printed[0] == printed[1]
