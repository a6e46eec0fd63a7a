"""The training machinery the MLP classifier and regressor share.

scikit-learn's ``BaseMultilayerPerceptron`` algorithm, step for step, with its math on an
nnbackend backend:

* the network is a :class:`~nnbackend.Sequential` of :class:`~nnbackend.Linear` layers and the
  hidden activation (:mod:`._network`); the solvers ``"sgd"`` and ``"adam"`` are
  :class:`~nnbackend.SGD` and :class:`~nnbackend.Adam` over every parameter; ``"lbfgs"`` is
  SciPy's L-BFGS-B on the host, each evaluation of the loss and its gradient a full-batch
  forward and backward on the backend;
* the loss of a batch B with weights w (S = Σ_B w, or |B|) is scikit-learn's::

      L_B = loss(B) + α/(2 S) Σₗ ‖Wₗ‖²       (the intercepts are not penalised)

  its gradient adds α Wₗ / S to each weight's (before the optimizer's step);
* Adam is scikit-learn's variant: θ ← θ − α_t m / (√v + ε) with α_t = α √(1 − β₂ᵗ)/(1 − β₁ᵗ),
  which is :class:`~nnbackend.Adam`'s θ ← θ − α m̂ / (√v̂ + ε′) with ε′ = ε/√(1 − β₂ᵗ), set per
  step (a host number);
* SGD's velocity v ← μ v + η g, θ ← θ − v (Nesterov: θ ← θ − (η g + μ v)) is scikit-learn's
  with the sign of v flipped; η is ``learning_rate_init``, then η₀/(t + 1)^power_t after each
  epoch with ``"invscaling"`` (t the samples seen), η/5 with ``"adaptive"`` when the loss stops
  improving;
* each epoch shuffles as ``sklearn.utils.shuffle`` does, on the estimator's ``RandomState`` (the
  same draws as scikit-learn's), and each batch's rows are gathered on the device
  (``xp.take`` of a slice of the epoch's order) just before its step; the early-stopping split is
  ``train_test_split`` on the same ``RandomState`` (stratified for single-output classifiers).

Nothing in an epoch reads the device back but its end: the epoch's loss (and, with
``early_stopping``, the validation score, in the same read). The fitted weights are copied to
the host (``coefs_``, ``intercepts_``) at the end of ``fit`` and ``partial_fit``, and the host
copies are the estimator's state: ``predict`` computes from them, pickles hold them, and a
``warm_start`` fit or a ``partial_fit`` starts from them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, TypeVar, cast

import numpy as np
import scipy.optimize
from sklearn import config_context, get_config
from sklearn.base import BaseEstimator, _fit_context, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state, gen_batches
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from .._typing import Array, Namespace
from ..backend import Backend, get_backend, to_numpy
from ..layers import Linear, Sequential
from ..optim import SGD, Adam, Optimizer
from ._losses import output_loss
from ._network import (
    HIDDEN_ACTIVATIONS,
    TrainingPasses,
    build_network,
    forward,
    init_coefs,
    linear_layers,
    load_weights,
    read_weights,
)
from ._placement import BackendSpec, describe, input_backend, resolve, to_host

__all__ = [
    "BaseMultilayerPerceptron",
    "fit_context",
    "float_dtypes",
    "if_stochastic",
]

_F = TypeVar("_F", bound=Callable[..., Any])


def fit_context(method: _F) -> _F:
    """scikit-learn's ``_fit_context``: the parameters validated once per fit, nested
    estimators' validation skipped."""
    return cast(_F, _fit_context(prefer_skip_nested_validation=True)(method))


def if_stochastic(method: _F) -> _F:
    """The method exists only for the stochastic solvers (``hasattr`` is False for lbfgs)."""
    return cast(_F, available_if(lambda est: est._check_solver())(method))

_STOCHASTIC_SOLVERS = ("sgd", "adam")


@dataclass
class _Live:
    """What lives on the backend between calls (never pickled): the network, its Linear
    layers, and the optimizer whose state ``partial_fit`` carries from call to call."""

    spec: BackendSpec
    backend: Backend
    dtype: str
    model: Sequential
    layers: list[Linear]
    optimizer: Optimizer | None = None


class BaseMultilayerPerceptron(BaseEstimator):  # type: ignore[misc]  # untyped base
    """Shared parameters, ``fit``/``partial_fit`` and prediction of the MLP estimators.

    Not for direct use: see :class:`~nnbackend.sklearn.MLPClassifier` and
    :class:`~nnbackend.sklearn.MLPRegressor`.
    """

    _parameter_constraints: dict[str, list[Any]] = {  # noqa: RUF012 (scikit-learn's layout)
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(HIDDEN_ACTIVATIONS))],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        # [0, 1): the velocity of momentum 1 never decays (scikit-learn accepts 1.0)
        "momentum": [Interval(Real, 0, 1, closed="left")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "backend": [None, str, Backend],
        "dtype": [StrOptions({"float32", "float64"})],
    }

    # The parameters (set by the subclasses' __init__) and the state fit sets.
    hidden_layer_sizes: Any
    activation: str
    solver: str
    alpha: float
    batch_size: Any
    learning_rate: str
    learning_rate_init: float
    power_t: float
    max_iter: int
    shuffle: bool
    random_state: Any
    tol: float
    verbose: bool
    warm_start: bool
    momentum: float
    nesterovs_momentum: bool
    early_stopping: bool
    validation_fraction: float
    beta_1: float
    beta_2: float
    epsilon: float
    n_iter_no_change: Any
    max_fun: int
    backend: Any
    dtype: str
    out_activation_: str
    loss: str
    _fit_dtype: str
    _live: _Live | None

    # ---------------------------------------------------------------- pickling and cloning

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        live = state.pop("_live", None)
        if live is not None and live.optimizer is not None:
            # host copies (NumPy) of the velocities or moments: partial_fit goes on after a load
            state["_optimizer_state"] = live.optimizer.state_dict()
        if isinstance(state.get("backend"), Backend):
            state["backend"] = _BackendParam(describe(state["backend"]))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        param = state.get("backend")
        if isinstance(param, _BackendParam):
            state["backend"] = param.restore()
        super().__setstate__(state)

    def __sklearn_clone__(self) -> Any:
        # A Backend holds its module, which copy.deepcopy refuses: the clone shares the
        # (immutable) Backend and clones every other parameter as scikit-learn does.
        backend = self.backend
        if not isinstance(backend, Backend):
            return super().__sklearn_clone__()
        self.backend = None
        try:
            clone = super().__sklearn_clone__()
        finally:
            self.backend = backend
        clone.backend = backend
        return clone

    # ---------------------------------------------------------------- placement

    def _where(self) -> str:
        return type(self).__name__

    def _choose_backend(self, target: Backend | None) -> Backend:
        """Where this call computes: the ``backend`` parameter, else the input's (Array API
        dispatch), else NumPy."""
        if self.backend is not None:
            return get_backend(self.backend)
        return target if target is not None else get_backend("numpy")

    def _predict_backend(self, X: Any, target: Backend | None, method: str) -> Backend:
        """Where a prediction computes, refusing (as scikit-learn's Array API estimators do)
        an input of another namespace or device than fit's under Array API dispatch."""
        if self.backend is not None:
            return get_backend(self.backend)
        spec: BackendSpec = self._backend_spec
        if get_config()["array_api_dispatch"]:
            given = describe(target) if target is not None else ("numpy", None)
            if given != spec:
                fitted = spec[0] if spec[1] is None else f"{spec[0]} on {spec[1]}"
                now = given[0] if given[1] is None else f"{given[0]} on {given[1]}"
                msg = (
                    f"Inputs passed to {self._where()}.{method}() must use the same namespace "
                    f"and the same device as those passed to fit(): fit used {fitted}, "
                    f"{method} got {now}"
                )
                raise ValueError(msg)
        live: _Live | None = getattr(self, "_live", None)
        if live is not None and live.spec == spec:
            return live.backend
        found: Backend = (target if target is not None and describe(target) == spec
                          else resolve(spec))
        return found

    def _dtype_on(self, backend: Backend, dtype: str) -> Any:
        try:
            return backend.dtype(dtype)
        except TypeError as exc:
            msg = (
                f"{self._where()}: dtype={dtype!r} is not available on {backend!r} ({exc}); "
                "pass dtype='float32'"
            )
            raise ValueError(msg) from exc

    def _to_backend(self, backend: Backend, data: Any, dtype: str, what: str) -> Array:
        """Host data or an array of any backend on ``backend`` in ``dtype`` (an explicit
        transfer where it is not there yet)."""
        self._dtype_on(backend, dtype)
        try:
            return backend.asarray(data, dtype=dtype)
        except (TypeError, ValueError) as exc:
            msg = (
                f"{self._where()}: {what} cannot be placed on {backend!r} as {dtype} ({exc}); "
                "pass dtype='float32' where the device has no float64"
            )
            raise ValueError(msg) from exc

    def _check_solver(self) -> bool:
        """True for the stochastic solvers; scikit-learn's AttributeError for the others
        (what ``available_if`` turns into ``hasattr(est, "partial_fit")`` being False)."""
        if self.solver not in _STOCHASTIC_SOLVERS:
            msg = (f"partial_fit is only available for stochastic optimizers. {self.solver} is "
                   "not stochastic.")
            raise AttributeError(msg)
        return True

    # ---------------------------------------------------------------- fit

    def _validate_input(self, X: Any, y: Any, incremental: bool, reset: bool
                        ) -> tuple[Any, Any, np.ndarray | None]:
        """(X, Y, Y on the host or None): X validated, Y the (n, K) targets."""
        raise NotImplementedError

    def _fit(self, X: Any, y: Any, sample_weight: Any = None, incremental: bool = False
             ) -> BaseMultilayerPerceptron:
        hidden_layer_sizes = self.hidden_layer_sizes
        if not hasattr(hidden_layer_sizes, "__iter__"):
            hidden_layer_sizes = [hidden_layer_sizes]
        hidden_layer_sizes = list(hidden_layer_sizes)
        if np.any(np.array(hidden_layer_sizes) <= 0):
            msg = f"hidden_layer_sizes must be > 0, got {hidden_layer_sizes}."
            raise ValueError(msg)
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)

        target = input_backend(X)
        backend = self._choose_backend(target)
        X, Y, Y_host = self._validate_input(X, y, incremental, reset=first_pass)
        n_samples, n_features = X.shape
        dtype = self.dtype if first_pass or not hasattr(self, "_fit_dtype") else self._fit_dtype
        self._dtype_on(backend, dtype)
        sw_host = None
        if sample_weight is not None:
            sw_host = self._check_sample_weight(sample_weight, n_samples)

        self.n_outputs_ = int(Y.shape[1])
        layer_units = [n_features, *hidden_layer_sizes, self.n_outputs_]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(layer_units, np.dtype(dtype))
        self._fit_dtype = dtype

        Xd = self._to_backend(backend, X, dtype, "X")
        Yd = self._to_backend(backend, Y, dtype, "y")
        live = self._network(backend, dtype, layer_units, keep_optimizer=incremental)
        if self.solver in _STOCHASTIC_SOLVERS:
            self._fit_stochastic(live, Xd, Yd, Y_host, sw_host, incremental)
        else:
            self._fit_lbfgs(live, Xd, Yd, sw_host)
        self.coefs_, self.intercepts_ = read_weights(live.model)
        if not all(np.isfinite(w).all() for w in (*self.coefs_, *self.intercepts_)):
            msg = (
                "Solver produced non-finite parameter weights. The input data may contain "
                "large values and need to be preprocessed."
            )
            raise ValueError(msg)
        return self

    def _check_sample_weight(self, sample_weight: Any, n_samples: int) -> np.ndarray:
        """The weights as a host float64 (n,) array (scikit-learn's checks and messages); they
        are read once per fit, for the batches' sums S."""
        host = to_host(sample_weight)
        with config_context(array_api_dispatch=False):
            return np.asarray(_check_sample_weight(host, np.empty((n_samples, 0))),
                              dtype=np.float64)

    def _initialize(self, layer_units: list[int], dtype: np.dtype[Any]) -> None:
        """First fit: counters, output activation, initial weights (scikit-learn's draws)."""
        self.n_iter_ = 0
        self.t_ = 0
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._output_activation()
        self.coefs_, self.intercepts_ = init_coefs(layer_units, self.activation,
                                                   self._random_state, dtype)
        self._best_coefs = [c.copy() for c in self.coefs_]
        self._best_intercepts = [i.copy() for i in self.intercepts_]
        self._live = None
        self.__dict__.pop("_optimizer_state", None)
        if self.solver in _STOCHASTIC_SOLVERS:
            self.loss_curve_: list[float] = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_: list[float] | None = []
                self.best_validation_score_: float | None = -np.inf
                self.best_loss_: float | None = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    def _output_activation(self) -> str:
        raise NotImplementedError

    def _network(self, backend: Backend, dtype: str, layer_units: list[int], *,
                 keep_optimizer: bool) -> _Live:
        """The network on ``backend`` holding ``coefs_``/``intercepts_`` (reused and loaded in
        place when one of that shape is there, so that an optimizer kept by ``partial_fit``
        still steps its parameters)."""
        spec = describe(backend)
        live: _Live | None = getattr(self, "_live", None)
        shapes = [c.shape for c in self.coefs_]
        if (live is not None and live.spec == spec and live.dtype == dtype
                and [tuple(m.weight.shape[::-1]) for m in live.layers] == shapes):
            load_weights(live.model, self.coefs_, self.intercepts_)
        else:
            model = build_network(self.coefs_, self.intercepts_, self.activation, backend, dtype)
            live = _Live(spec, backend, dtype, model, linear_layers(model))
        if not keep_optimizer:
            live.optimizer = None
            self.__dict__.pop("_optimizer_state", None)
        self._live = live
        self._backend_spec = spec
        return live

    def _make_optimizer(self, live: _Live) -> Optimizer:
        # One group over every parameter: the L2 penalty's gradient is added to the weights'
        # gradients by the step (:meth:`_batch_step`), so the intercepts need no group of
        # their own (a second group would double the optimizer's per-step calls)
        params = list(live.model.parameters())
        opt: Optimizer
        if self.solver == "sgd":
            opt = SGD(params, lr=float(self.learning_rate_init), momentum=float(self.momentum),
                      nesterov=bool(self.nesterovs_momentum and self.momentum > 0))
        else:
            opt = Adam(params, lr=float(self.learning_rate_init),
                       betas=(float(self.beta_1), float(self.beta_2)), eps=float(self.epsilon))
        saved = self.__dict__.get("_optimizer_state")
        if saved is not None:  # validated by the load; kept until it succeeds
            try:
                opt.load_state_dict(saved)
            except (ValueError, TypeError, KeyError) as exc:
                msg = (f"{self._where()}: the optimizer state this estimator holds does not fit "
                       f"its network and solver ({exc}); fit it again to start afresh")
                raise ValueError(msg) from exc
            del self.__dict__["_optimizer_state"]
        return opt

    def _fit_stochastic(self, live: _Live, X: Array, Y: Array, Y_host: np.ndarray | None,
                        sw_host: np.ndarray | None, incremental: bool) -> None:
        backend, xp = live.backend, live.backend.xp
        if live.optimizer is None:
            restoring = "_optimizer_state" in self.__dict__
            live.optimizer = self._make_optimizer(live)
            if not restoring:
                self._learning_rate = float(self.learning_rate_init)
        optimizer = live.optimizer
        if self.early_stopping and incremental:
            msg = "partial_fit does not support early_stopping=True"
            raise ValueError(msg)
        early_stopping = self.early_stopping
        n_total = int(X.shape[0])
        X_val = Y_val = w_val = None
        if early_stopping:
            # don't stratify in multilabel classification (scikit-learn's rule)
            stratify = Y_host if is_classifier(self) and self.n_outputs_ == 1 else None
            train_idx, val_idx = train_test_split(
                np.arange(n_total), random_state=self._random_state,
                test_size=self.validation_fraction, stratify=stratify)
            if val_idx.shape[0] < 2:
                msg = ("The validation set is too small. Increase 'validation_fraction' or the "
                       "size of your dataset.")
                raise ValueError(msg)
            t_dev = backend.asarray(train_idx)
            v_dev = backend.asarray(val_idx)
            X_train, Y_train = xp.take(X, t_dev, axis=0), xp.take(Y, t_dev, axis=0)
            X_val, Y_val = xp.take(X, v_dev, axis=0), xp.take(Y, v_dev, axis=0)
            if sw_host is not None:
                w_val = self._column(backend, sw_host[val_idx], X.dtype)
                sw_host = sw_host[train_idx]
        else:
            X_train, Y_train = X, Y
        w_train = None if sw_host is None else self._column(backend, sw_host, X.dtype)

        n_samples = int(X_train.shape[0])
        sample_idx = np.arange(n_samples, dtype=int)
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                              "going to be clipped", stacklevel=3)
            batch_size = int(np.clip(self.batch_size, 1, n_samples))
        batches = list(gen_batches(n_samples, batch_size))
        sizes = [float(s.stop - s.start) for s in batches]
        step = self._batch_step(live, optimizer)
        self._best_device: list[Array] | None = None

        try:
            self.n_iter_ = 0
            for _ in range(self.max_iter):
                order = None
                if self.shuffle:
                    sample_idx = _shuffled(sample_idx, self._random_state)
                    order = backend.asarray(sample_idx)
                    swe = None if sw_host is None else sw_host[sample_idx]
                else:
                    swe = sw_host
                if self.solver == "sgd":
                    optimizer.lr = self._learning_rate
                totals = sizes if swe is None else [float(swe[s].sum()) for s in batches]
                if swe is not None and 0.0 in totals:
                    k = totals.index(0.0)
                    msg = (f"{self._where()}.fit: the sample weights of batch {k} of epoch "
                           f"{self.n_iter_ + 1} (its samples {batches[k].start} to "
                           f"{batches[k].stop - 1} in the epoch's order) sum to 0, so its loss "
                           "is undefined; give every batch some weight (a larger batch_size)")
                    raise ValueError(msg)
                accumulated: Array | None = None
                for s, size, total in zip(batches, sizes, totals, strict=True):
                    # the batch's rows gathered just before its step, still in cache for
                    # its products (an epoch's gathered rows, 0.9 MB for the digits, were not)
                    rows = s if order is None else order[s.start:s.stop]
                    xb, yb = _rows(X_train, rows, xp), _rows(Y_train, rows, xp)
                    wb = None if w_train is None else _rows(w_train, rows, xp)
                    loss = step(xb, yb, wb, total)
                    term = loss * size
                    accumulated = term if accumulated is None else accumulated + term
                assert accumulated is not None
                self.n_iter_ += 1
                # the epoch's one read: its loss (and the validation score)
                if early_stopping:
                    score = self._device_score(live, X_val, Y_val, w_val, xp)
                    both = to_numpy(xp.stack([xp.astype(accumulated, score.dtype), score]))
                    epoch_total, val_score = float(both[0]), float(both[1])
                else:
                    epoch_total, val_score = float(to_numpy(accumulated)), math.nan
                self.loss_ = epoch_total / n_samples
                self.t_ += n_samples
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
                self._update_no_improvement_count(early_stopping, val_score, live, xp)
                if self.solver == "sgd" and self.learning_rate == "invscaling":
                    self._learning_rate = (float(self.learning_rate_init)
                                           / (self.t_ + 1) ** self.power_t)
                if self._no_improvement_count > self.n_iter_no_change:
                    if early_stopping:
                        msg = (f"Validation score did not improve more than tol={self.tol:f} "
                               f"for {self.n_iter_no_change} consecutive epochs.")
                    else:
                        msg = (f"Training loss did not improve more than tol={self.tol:f} for "
                               f"{self.n_iter_no_change} consecutive epochs.")
                    if self._trigger_stopping(msg):
                        break
                    self._no_improvement_count = 0
                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn(
                        f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and "
                        "the optimization hasn't converged yet.", ConvergenceWarning,
                        stacklevel=3)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=3)

        if early_stopping:  # restore the best weights
            if self._best_device is not None:
                best = dict(zip([n for n, _ in live.model.named_parameters()],
                                self._best_device, strict=True))
                live.model.load_state_dict(best)
                self._best_coefs, self._best_intercepts = read_weights(live.model)
            else:
                load_weights(live.model, self._best_coefs, self._best_intercepts)
        self._best_device = None

    @staticmethod
    def _column(backend: Backend, values: np.ndarray, dtype: Any) -> Array:
        return backend.asarray(values.reshape(-1, 1), dtype=dtype)

    def _batch_step(self, live: _Live, optimizer: Optimizer
                    ) -> Callable[[Array, Array, Array | None, float], Array]:
        """The training step on one batch, ``step(xb, yb, wb, S) -> loss``: forward,
        scikit-learn's loss and gradient, one optimizer step.

        xb (B, n_features) and yb (B, K) on the backend, wb (B, 1) the sample weights or None,
        S = Σ wb (or B) a host number; the loss is a 0-d array that stays on the device.

        The fit's constants are resolved here once, not per batch (the step's own cost is what
        a small data set's epoch is made of).
        """
        xp = live.backend.xp
        alpha, output = float(self.alpha), self.out_activation_
        passes = TrainingPasses(live.layers, self.activation, xp)
        (group,) = optimizer.param_groups
        adam = self.solver == "adam"
        epsilon, beta_2 = float(self.epsilon), float(self.beta_2)

        def step(xb: Array, yb: Array, wb: Array | None, total: float) -> Array:
            if adam:
                # scikit-learn's ε (added before the bias correction) as Adam's ε′, a number
                # that is valid by construction: written into the group without the checks
                # of ``optimizer.eps = ...`` (nor its settings_version, which only a compiled
                # step reads; this step is never compiled)
                t = optimizer.state[0].get("step", 0) + 1
                group.settings["eps"] = epsilon / math.sqrt(1.0 - beta_2 ** t)
            # scikit-learn's passes over the layers (the fit checked X once: no per-batch
            # checks, no closures; the gradients assigned, not accumulated: no zero_grad)
            values = passes.forward(xb)
            loss, dz = output_loss(output, values[-1], yb, wb, total, xp)
            passes.backward(values, dz)
            if alpha:  # L_B + α/(2S) Σ‖W‖², and α W / S added to each weight's gradient
                decay = alpha / total
                loss = loss + passes.penalize(decay) * (0.5 * decay)
            optimizer.step()
            return loss

        return step

    def _trigger_stopping(self, msg: str) -> bool:
        """scikit-learn's ``trigger_stopping``: stop, or divide η by 5 (``"adaptive"`` SGD)."""
        if self.solver != "sgd" or self.learning_rate != "adaptive":
            if self.verbose:
                print(msg + " Stopping.")
            return True
        if self._learning_rate <= 1e-6:
            if self.verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._learning_rate /= 5.0
        if self.verbose:
            print(msg + f" Setting learning rate to {self._learning_rate:f}")
        return False

    def _update_no_improvement_count(self, early_stopping: bool, val_score: float,
                                     live: _Live, xp: Namespace) -> None:
        if early_stopping:
            assert self.validation_scores_ is not None
            assert self.best_validation_score_ is not None
            self.validation_scores_.append(val_score)
            if self.verbose:
                print(f"Validation score: {self.validation_scores_[-1]:f}")
            if val_score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if val_score > self.best_validation_score_:
                self.best_validation_score_ = val_score
                self._best_device = [xp.asarray(p.data, copy=True)
                                     for p in live.model.parameters()]
        else:
            assert self.best_loss_ is not None
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    def _device_score(self, live: _Live, X: Array, Y: Array, w: Array | None,
                      xp: Namespace) -> Array:
        """The validation score (accuracy or R²) as a 0-d array, NaN for non-finite
        predictions (scikit-learn's ``_score_with_function``)."""
        raise NotImplementedError

    def _live_weights(self, live: _Live) -> list[tuple[Array, Array]]:
        return [(m.weight.data, m.bias.data) for m in live.layers]  # type: ignore[union-attr]

    def _fit_lbfgs(self, live: _Live, X: Array, Y: Array, sw_host: np.ndarray | None) -> None:
        """SciPy's L-BFGS-B over the packed weights (scikit-learn's packing: every coefs_[i]
        raveled, then every intercepts_[i]); each evaluation is one full-batch forward and
        backward on the backend and one host read of the loss and the gradient."""
        backend, xp = live.backend, live.backend.xp
        total = float(X.shape[0]) if sw_host is None else float(sw_host.sum())
        w = None if sw_host is None else self._column(backend, sw_host, X.dtype)
        shapes = [c.shape for c in self.coefs_]
        sizes = [int(np.prod(s)) for s in shapes] + [c.shape[1] for c in self.coefs_]
        alpha = float(self.alpha)
        passes = TrainingPasses(live.layers, self.activation, xp)
        dtype = np.dtype(self._fit_dtype)

        def unpack(packed: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
            # SciPy iterates in float64: the network takes the fit's dtype
            parts = np.split(packed.astype(dtype, copy=False), np.cumsum(sizes)[:-1])
            coefs = [p.reshape(s) for p, s in zip(parts[:len(shapes)], shapes, strict=True)]
            return coefs, list(parts[len(shapes):])

        def loss_grad(packed: np.ndarray) -> tuple[float, np.ndarray]:
            coefs, intercepts = unpack(packed)
            load_weights(live.model, coefs, intercepts)
            values = passes.forward(X)
            loss, dz = output_loss(self.out_activation_, values[-1], Y, w, total, xp)
            passes.backward(values, dz)
            if alpha:
                loss = loss + passes.penalize(alpha / total) * (0.5 * alpha / total)
            pieces, biases = [], []
            for m in live.layers:
                pieces.append(xp.reshape(xp.permute_dims(m.weight.grad, (1, 0)), (-1,)))
                biases.append(m.bias.grad)  # type: ignore[union-attr]
            flat = xp.concat([*pieces, *biases, xp.reshape(loss, (1,))])
            host = np.asarray(to_numpy(flat), dtype=np.float64)
            return float(host[-1]), host[:-1].copy()

        packed = np.hstack([c.ravel() for c in (*self.coefs_, *self.intercepts_)])
        result = scipy.optimize.minimize(
            loss_grad, packed.astype(np.float64), method="L-BFGS-B", jac=True,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol})
        n_iter = min(int(result.nit), self.max_iter)
        if result.status != 0:  # scikit-learn's warning, word for word
            text = (f"lbfgs failed to converge after {n_iter} iteration(s) "
                    f"(status={result.status}):\n{result.message}\n")
            if n_iter == self.max_iter:
                text += ("\nIncrease the number of iterations to improve the convergence "
                         f"(max_iter={self.max_iter}).")
            text += ("\nYou might also want to scale the data as shown in:\n"
                     "    https://scikit-learn.org/stable/modules/preprocessing.html")
            warnings.warn(text, ConvergenceWarning, stacklevel=3)
        self.n_iter_ = n_iter
        self.loss_ = float(result.fun)
        coefs, intercepts = unpack(result.x)
        load_weights(live.model, coefs, intercepts)

    # ---------------------------------------------------------------- prediction

    def _forward(self, X: Any, method: str) -> tuple[Array, Backend, Backend | None]:
        """The output activations for X on the backend that fit used, with that backend and
        where the output goes (the input's backend under Array API dispatch, else None:
        the host)."""
        check_is_fitted(self)
        target = input_backend(X)
        backend = self._predict_backend(X, target, method)
        X = validate_data(self, X, reset=False, dtype=float_dtypes(target))
        dtype: str = getattr(self, "_fit_dtype", self.dtype)
        Xd = self._to_backend(backend, X, dtype, "X")
        weights = [(self._to_backend(backend, c, dtype, "coefs_").T,
                    self._to_backend(backend, b, dtype, "intercepts_"))
                   for c, b in zip(self.coefs_, self.intercepts_, strict=True)]
        out = forward(Xd, weights, self.activation, self.out_activation_, backend.xp)
        return out, backend, target

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        return tags


def _rows(a: Array, rows: slice | Array, xp: Namespace) -> Array:
    """a's rows ``rows``: a slice's view, or the rows an index array names (gathered)."""
    return a[rows, ...] if isinstance(rows, slice) else xp.take(a, rows, axis=0)


def _shuffled(indices: np.ndarray, random_state: np.random.RandomState) -> np.ndarray:
    """``sklearn.utils.shuffle(indices, random_state=random_state)``: the same draw (a
    ``RandomState.shuffle`` of arange(n)) without its per-call input checks."""
    order = np.arange(indices.shape[0])
    random_state.shuffle(order)
    return indices[order]


def float_dtypes(target: Backend | None) -> tuple[Any, Any]:
    """scikit-learn's accepted input dtypes (float64, float32) in the namespace the input keeps
    (NumPy's without Array API dispatch)."""
    xp: Any = np if target is None else target.xp
    return (xp.float64, xp.float32)


class _BackendParam:
    """A ``backend`` parameter given as a Backend, pickled as its description."""

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec

    def restore(self) -> Any:
        try:
            return resolve(self.spec)
        except Exception:  # not available in this process: its name (a CPU can still predict
            name, dev = self.spec  # after set_params(backend="numpy"))
            return name if dev is None else f"{name}:{dev}"
