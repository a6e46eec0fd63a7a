"""``MLPClassifier``: scikit-learn's multilayer perceptron classifier, trained on a backend."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.multiclass import _check_partial_fit_first_call, type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from .._typing import Array, Namespace
from ._base import (
    BaseMultilayerPerceptron,
    _Live,
    fit_context,
    float_dtypes,
    if_stochastic,
)
from ._network import forward
from ._placement import input_backend, output_to, to_host

__all__ = ["MLPClassifier"]


class MLPClassifier(ClassifierMixin, BaseMultilayerPerceptron):  # type: ignore[misc]
    """Multilayer perceptron classifier: scikit-learn's ``MLPClassifier`` on any backend.

    The parameters, their defaults and meanings, the fitted attributes and the training
    algorithm are scikit-learn's (``sklearn.neural_network.MLPClassifier``): the log-loss of a
    softmax output for multiclass targets, of one logistic output for binary targets
    (``predict_proba`` still gives (n, 2)) and of one logistic output per label for multilabel
    indicator targets, with the L2 penalty α/(2 S) Σ‖W‖² on the weights (S the batch's sample
    count or weight sum). The math runs on nnbackend (see :mod:`nnbackend.sklearn._base`), on
    the backend ``backend`` names, or under ``sklearn.config_context(array_api_dispatch=True)``
    on the namespace and device of the input arrays, where the outputs then stay.

    Parameters
    ----------
    hidden_layer_sizes : array-like of int, default=(100,)
        The width of each hidden layer.
    activation : {"identity", "logistic", "tanh", "relu"}, default="relu"
        The hidden layers' activation.
    solver : {"lbfgs", "sgd", "adam"}, default="adam"
        ``"sgd"`` and ``"adam"`` step :class:`~nnbackend.SGD` and :class:`~nnbackend.Adam` on
        the backend; ``"lbfgs"`` is SciPy's L-BFGS-B on the host, its loss and gradient computed
        on the backend (one host transfer of the weights and one read of the gradient per
        evaluation).
    alpha : float, default=1e-4
        Strength α ≥ 0 of the L2 penalty on the weights (not the intercepts).
    batch_size : int or "auto", default="auto"
        Minibatch size; "auto" is min(200, n_samples).
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant"
        SGD's schedule: η₀; η₀ / (t + 1)^power_t after each epoch (t the samples seen); or η
        divided by 5 whenever the loss (validation score) stops improving by ``tol`` for
        ``n_iter_no_change`` epochs, until η ≤ 1e-6.
    learning_rate_init : float, default=1e-3
        η₀ (SGD and Adam).
    power_t : float, default=0.5
    max_iter : int, default=200
        Epochs (stochastic solvers) or iterations (L-BFGS).
    shuffle : bool, default=True
        Shuffle the samples every epoch.
    random_state : int, RandomState or None, default=None
        Initial weights, shuffling and the early-stopping split: the draws of scikit-learn's
        MLP with the same ``random_state``.
    tol : float, default=1e-4
    verbose : bool, default=False
        Print the loss after each epoch.
    warm_start : bool, default=False
        ``fit`` starts from the current ``coefs_``/``intercepts_`` (with a new optimizer).
    momentum : float in [0, 1), default=0.9
        SGD's momentum (scikit-learn also accepts 1.0, a velocity that never decays).
    nesterovs_momentum : bool, default=True
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified for single-output
        targets) and stop when its accuracy stops improving; the best weights are kept.
    validation_fraction : float, default=0.1
    beta_1, beta_2 : float in [0, 1), default=0.9, 0.999
        Adam's decay rates.
    epsilon : float, default=1e-8
        Adam's ε (scikit-learn's: added to √v before the bias correction).
    n_iter_no_change : int, default=10
    max_fun : int, default=15000
        L-BFGS's budget of loss evaluations.
    backend : None, str or Backend, default=None
        Where the math runs: None for NumPy, or the namespace and device of the inputs under
        Array API dispatch; else a backend name (``"cupy"``, ``"torch:cuda:0"``, ...) or a
        :class:`~nnbackend.Backend`. Inputs on the host are transferred once per call and the
        outputs come back to the host.
    dtype : {"float64", "float32"}, default="float64"
        The floating dtype of the computation (float64 as scikit-learn computes).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels (host NumPy, any label type).
    coefs_ : list of ndarray
        ``coefs_[i]`` of shape (n_in, n_out): the weights of layer i (host NumPy).
    intercepts_ : list of ndarray
        ``intercepts_[i]`` of shape (n_out,).
    loss_ : float
        The last epoch's mean loss (the final loss for L-BFGS).
    loss_curve_ : list of float
        The mean loss of every epoch (stochastic solvers).
    best_loss_ : float or None
        The lowest training loss (None with early stopping).
    validation_scores_ : list of float or None
        The held-out accuracy after every epoch (early stopping only).
    best_validation_score_ : float or None
    t_ : int
        Training samples seen.
    n_iter_ : int
        Epochs run by the last call.
    n_layers_ : int
        Layers including the input and output layers.
    n_outputs_ : int
        Output units: 1 for a binary problem, else the number of classes or labels.
    out_activation_ : {"softmax", "logistic"}
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Only when X had string column names.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from nnbackend.sklearn import MLPClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = MLPClassifier(max_iter=20, random_state=0).fit(X / 16, y)  # doctest: +SKIP
    >>> clf.predict_proba(X[:2] / 16).shape  # doctest: +SKIP
    (2, 10)
    """

    def __init__(
        self,
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: Any = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 0.001,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: Any = 10,
        max_fun: int = 15000,
        backend: Any = None,
        dtype: str = "float64",
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.dtype = dtype

    loss = "log_loss"  # scikit-learn's attribute (not a parameter of the classifier)

    def _output_activation(self) -> str:
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool
                        ) -> tuple[Any, Any, np.ndarray | None]:
        # Labels live on the host (classes_ may be strings): one read of y per fit.
        X, y = validate_data(self, X, to_host(y), multi_output=True,
                             dtype=float_dtypes(input_backend(X)), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    msg = (
                        "warm_start can only be used where `y` has the same classes as in the "
                        f"previous call to fit. Previously got {self.classes_}, `y` has "
                        f"{classes}"
                    )
                    raise ValueError(msg)
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                msg = (f"`y` has classes not in `self.classes_`. `self.classes_` has "
                       f"{self.classes_}. 'y' has {classes}.")
                raise ValueError(msg)
        Y = np.asarray(self._label_binarizer.transform(y), dtype=bool)
        return X, Y, Y

    @fit_context
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPClassifier:
        """Fit the model to data matrix X and targets y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Class labels, or a multilabel indicator matrix.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights wᵢ of the samples in the loss: each batch's loss is Σ wᵢ ℓᵢ / Σ wᵢ.

        Returns
        -------
        self
        """
        self._fit(X, y, sample_weight=sample_weight, incremental=False)
        return self

    @if_stochastic
    @fit_context
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None,
                    classes: Any = None) -> MLPClassifier:
        """One epoch over (X, y), continuing from the current weights and optimizer state.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None
        classes : array of shape (n_classes,), default=None
            Every class of the problem: required on the first call (``y`` need not hold all).

        Returns
        -------
        self
        """
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(to_host(y)).startswith("multilabel"):
                self._label_binarizer.fit(to_host(y))
            else:
                self._label_binarizer.fit(classes)
        self._fit(X, y, sample_weight=sample_weight, incremental=True)
        return self

    def _proba(self, X: Any, method: str) -> tuple[Array, Any, Any]:
        out, backend, target = self._forward(X, method)
        xp = backend.xp
        if self.n_outputs_ == 1:
            p = xp.reshape(out, (-1,))
            out = xp.stack([1.0 - p, p], axis=1)
        return out, backend, target

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, shape (n_samples, n_classes), in the order of ``classes_``
        (binary: [1 − p, p] from the one logistic output)."""
        out, backend, target = self._proba(X, "predict_proba")
        return output_to(out, backend, target)

    def predict_log_proba(self, X: Any) -> Any:
        """log(predict_proba(X))."""
        out, backend, target = self._proba(X, "predict_log_proba")
        return output_to(backend.xp.log(out), backend, target)

    def predict(self, X: Any) -> Any:
        """The predicted class of each sample (n_samples,), or the indicator matrix of the
        predicted labels for a multilabel problem."""
        check_is_fitted(self)
        out, backend, target = self._forward(X, "predict")
        xp = backend.xp
        kind = self._label_binarizer.y_type_
        numeric = self.classes_.dtype.kind in "biuf"
        if target is None or not numeric:  # labels on the host: scikit-learn's own decoding
            host = output_to(out, backend, None)
            if self.n_outputs_ == 1:
                host = host.ravel()
            return self._label_binarizer.inverse_transform(host)
        index = backend.index_dtype
        if kind == "multilabel-indicator":
            return output_to(xp.astype(out > 0.5, index), backend, target)
        if kind == "multiclass":
            chosen = xp.argmax(out, axis=1)
        elif len(self.classes_) == 1:
            chosen = xp.zeros(out.shape[0], dtype=index, device=backend.device)
        else:
            chosen = xp.astype(xp.reshape(out, (-1,)) > 0.5, index)
        classes = backend.asarray(self.classes_)
        return output_to(xp.take(classes, xp.astype(chosen, index), axis=0), backend, target)

    def _device_score(self, live: _Live, X: Array, Y: Array, w: Array | None,
                      xp: Namespace) -> Array:
        """Accuracy on the held-out set (subset accuracy for multilabel), weighted by w."""
        p = forward(X, self._live_weights(live), self.activation, self.out_activation_, xp)
        kind = self._label_binarizer.y_type_
        if kind == "multiclass":
            correct = xp.argmax(p, axis=1) == xp.argmax(Y, axis=1)
        elif kind == "multilabel-indicator":
            correct = xp.all((p > 0.5) == (Y > 0.5), axis=1)
        else:
            correct = (p[:, 0] > 0.5) == (Y[:, 0] > 0.5)
        hits = xp.astype(correct, p.dtype)
        if w is None:
            score = xp.mean(hits)
        else:
            weights = xp.reshape(w, (-1,))
            score = xp.sum(hits * weights) / xp.sum(weights)
        finite = xp.all(xp.isfinite(p))
        return xp.where(finite, score, xp.full_like(score, math.nan))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags
