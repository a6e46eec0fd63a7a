"""``MLPRegressor``: scikit-learn's multilayer perceptron regressor, trained on a backend."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from .._typing import Array, Namespace
from ..backend import backend_of
from ._base import (
    BaseMultilayerPerceptron,
    _Live,
    fit_context,
    float_dtypes,
    if_stochastic,
)
from ._network import forward
from ._placement import input_backend, is_host, output_to, to_host

__all__ = ["MLPRegressor"]


class MLPRegressor(RegressorMixin, BaseMultilayerPerceptron):  # type: ignore[misc]
    """Multilayer perceptron regressor: scikit-learn's ``MLPRegressor`` on any backend.

    scikit-learn's parameters, attributes and algorithm (``sklearn.neural_network.
    MLPRegressor``), computed by nnbackend: the loss is half the mean squared error
    1/(2 K S) Σᵢ wᵢ Σₖ (ŷᵢₖ − yᵢₖ)² of an identity output over the K targets (or, with
    ``loss="poisson"``, half the Poisson deviance of an exponential output), plus the L2 penalty
    α/(2 S) Σ‖W‖² on the weights. See :class:`~nnbackend.sklearn.MLPClassifier` for the
    parameters they share; ``early_stopping`` scores R² on the held-out set.

    Parameters
    ----------
    loss : {"squared_error", "poisson"}, default="squared_error"
        The Poisson loss needs y ≥ 0 (checked for targets on the host).
    hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate,
    learning_rate_init, power_t, max_iter, shuffle, random_state, tol, verbose, warm_start,
    momentum, nesterovs_momentum, early_stopping, validation_fraction, beta_1, beta_2,
    epsilon, n_iter_no_change, max_fun, backend, dtype
        As for :class:`~nnbackend.sklearn.MLPClassifier`.

    Attributes
    ----------
    coefs_, intercepts_, loss_, loss_curve_, best_loss_, validation_scores_,
    best_validation_score_, t_, n_iter_, n_layers_, n_outputs_, n_features_in_,
    feature_names_in_
        As for :class:`~nnbackend.sklearn.MLPClassifier`.
    out_activation_ : {"identity", "exp"}
    """

    _parameter_constraints: dict[str, list[Any]] = {  # noqa: RUF012 (scikit-learn's layout)
        **BaseMultilayerPerceptron._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(
        self,
        loss: str = "squared_error",
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
        self.loss = loss
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

    def _output_activation(self) -> str:
        return "exp" if self.loss == "poisson" else "identity"

    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool
                        ) -> tuple[Any, Any, np.ndarray | None]:
        target = input_backend(X)
        if not is_host(y) and (target is None or backend_of(y) != target):
            y = to_host(y)  # y follows X: another namespace or device goes via the host
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True,
                             dtype=float_dtypes(input_backend(X)), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if y.ndim == 1:
            y = y[:, None] if isinstance(y, np.ndarray) else _column(y)
        if self.loss == "poisson" and isinstance(y, np.ndarray) and np.any(y < 0):
            msg = (f"{type(self).__name__}(loss='poisson') needs targets y >= 0, got a minimum "
                   f"of {y.min()!r}")
            raise ValueError(msg)
        return X, y, y if isinstance(y, np.ndarray) else None

    @fit_context
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """Fit the model to data matrix X and targets y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        sample_weight : array-like of shape (n_samples,), default=None
            Weights wᵢ of the samples in the loss.

        Returns
        -------
        self
        """
        self._fit(X, y, sample_weight=sample_weight, incremental=False)
        return self

    @if_stochastic
    @fit_context
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> MLPRegressor:
        """One epoch over (X, y), continuing from the current weights and optimizer state.

        Returns
        -------
        self
        """
        self._fit(X, y, sample_weight=sample_weight, incremental=True)
        return self

    def predict(self, X: Any) -> Any:
        """Predictions of shape (n_samples,), or (n_samples, n_targets) for several targets."""
        check_is_fitted(self)
        out, backend, target = self._forward(X, "predict")
        if out.shape[1] == 1:
            out = backend.xp.reshape(out, (-1,))
        return output_to(out, backend, target)

    def _device_score(self, live: _Live, X: Array, Y: Array, w: Array | None,
                      xp: Namespace) -> Array:
        """R² on the held-out set, averaged over the targets, weighted by w (scikit-learn's
        ``r2_score`` with ``force_finite``: a constant target scores 1 if predicted exactly,
        else 0)."""
        p = forward(X, self._live_weights(live), self.activation, self.out_activation_, xp)
        weights = xp.ones_like(Y[:, :1]) if w is None else w
        total = xp.sum(weights)
        residual = Y - p
        numerator = xp.sum(weights * residual * residual, axis=0)
        centred = Y - xp.sum(weights * Y, axis=0) / total
        denominator = xp.sum(weights * centred * centred, axis=0)
        zero_den = denominator == 0.0
        safe = xp.where(zero_den, xp.ones_like(denominator), denominator)
        r2 = xp.where(zero_den, xp.astype(numerator == 0.0, p.dtype), 1.0 - numerator / safe)
        score = xp.mean(r2)
        finite = xp.all(xp.isfinite(p))
        return xp.where(finite, score, xp.full_like(score, math.nan))


def _column(y: Array) -> Array:
    from array_api_compat import array_namespace

    xp = array_namespace(y)
    return xp.reshape(y, (-1, 1))
