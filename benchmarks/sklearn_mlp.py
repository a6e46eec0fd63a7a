"""nnbackend.sklearn's MLP against scikit-learn's at equal settings: scores and time per epoch.

Four data sets scikit-learn ships (digits, breast cancer and wine: MLPClassifier, accuracy;
diabetes: MLPRegressor, R², its target standardised too), each in a ``StandardScaler``
pipeline with the estimators' defaults (100 ReLU units, Adam, α = 1e-4, batches of
min(200, n), max_iter ``--max-iter``):

* **scores**: the mean test score over ``--seeds`` seeds × ``--folds`` folds (a shuffled
  (stratified) K-fold per seed, the seed also the estimators' ``random_state``);
* **time per epoch**: fits of E₁ = ``--epochs`` and 5 E₁ epochs on the whole standardised
  data set (``tol=0``, ``n_iter_no_change=inf``: no early stop), the fastest of ``--repeats``
  runs, the two estimators interleaved; the time per epoch is the slope between the two fits,
  what a fit costs besides its epochs the intercept (both printed, and fit time / 5 E₁).

Run it without OpenBLAS pinned to a kernel, and say how loaded the machine was (printed)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/sklearn_mlp.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 \\
        python benchmarks/sklearn_mlp.py --skip-scores
    python benchmarks/sklearn_mlp.py --backend cupy   # ours on a GPU, scikit-learn on the CPU
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.neural_network import MLPClassifier as SkClassifier
from sklearn.neural_network import MLPRegressor as SkRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from nnbackend import bench
from nnbackend.sklearn import MLPClassifier, MLPRegressor

DATASETS: dict[str, tuple[Callable[..., Any], bool]] = {
    "digits": (load_digits, True),
    "breast_cancer": (load_breast_cancer, True),
    "wine": (load_wine, True),
    "diabetes": (load_diabetes, False),
}


def _model(classifier: bool, ours: bool, backend: str | None, **params: Any) -> Any:
    if classifier:
        est = (MLPClassifier(backend=backend, **params) if ours else SkClassifier(**params))
        return make_pipeline(StandardScaler(), est)
    est = MLPRegressor(backend=backend, **params) if ours else SkRegressor(**params)
    return TransformedTargetRegressor(make_pipeline(StandardScaler(), est),
                                      transformer=StandardScaler())


def scores(name: str, args: argparse.Namespace) -> dict[str, Any]:
    loader, classifier = DATASETS[name]
    X, y = loader(return_X_y=True)
    out: dict[str, Any] = {}
    for ours in (True, False):
        values, warned = [], 0
        for seed in range(args.seeds):
            split = (StratifiedKFold if classifier else KFold)(args.folds, shuffle=True,
                                                                random_state=seed)
            model = _model(classifier, ours, args.backend, random_state=seed,
                           max_iter=args.max_iter)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                values.extend(cross_val_score(model, X, y, cv=split))
            warned += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
        key = "nnbackend" if ours else "sklearn"
        out[key] = float(np.mean(values))
        out[f"{key}_not_converged"] = warned
    out["difference"] = out["nnbackend"] - out["sklearn"]
    return out


def epoch_times(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Each estimator's fit of E₁ = ``--epochs`` and of E₂ = 5 E₁ epochs (the fastest of
    ``--repeats``, interleaved): the time per epoch is the slope (T(E₂) − T(E₁)) / (E₂ − E₁),
    and what a fit costs besides its epochs (validation, set-up, the final read) is the
    intercept; fit time / E₂ is reported too."""
    loader, classifier = DATASETS[name]
    X, y = loader(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    if not classifier:
        y = (y - y.mean()) / y.std()
    ours_cls, theirs_cls = (MLPClassifier, SkClassifier) if classifier else (MLPRegressor,
                                                                          SkRegressor)
    makers: dict[str, Callable[..., Any]] = {
        "nnbackend": lambda **p: ours_cls(backend=args.backend, **p),
        "sklearn": lambda **p: theirs_cls(**p)}
    short, long = args.epochs, 5 * args.epochs
    best = {(key, e): np.inf for key in makers for e in (short, long)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for make in makers.values():  # warm-up
            make(max_iter=2, random_state=0).fit(X, y)
        for _ in range(args.repeats):
            for epochs in (short, long):
                for key, make in makers.items():
                    est = make(max_iter=epochs, tol=0.0, n_iter_no_change=np.inf,
                               random_state=0)
                    start = time.perf_counter()
                    est.fit(X, y)
                    best[key, epochs] = min(best[key, epochs], time.perf_counter() - start)
    out: dict[str, Any] = {"samples": int(X.shape[0]), "epochs": [short, long]}
    for key in makers:
        slope = (best[key, long] - best[key, short]) / (long - short)
        out[f"{key}_ms"] = slope * 1e3
        out[f"{key}_fixed_ms"] = (best[key, short] - short * slope) * 1e3
        out[f"{key}_fit_per_epoch_ms"] = best[key, long] / long * 1e3
    out["ratio"] = out["nnbackend_ms"] / out["sklearn_ms"]
    out["fit_ratio"] = out["nnbackend_fit_per_epoch_ms"] / out["sklearn_fit_per_epoch_ms"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backend", default=None, help="nnbackend's backend (default NumPy)")
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--skip-scores", action="store_true")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    threads = bench.thread_info()
    load_before = os.getloadavg()
    print(f"NumPy BLAS {threads['blas']}, kernel {threads['blas_kernel']}, "
          f"{threads['blas_threads']} threads; OPENBLAS_CORETYPE="
          f"{threads['OPENBLAS_CORETYPE']}; {os.cpu_count()} CPUs; load average "
          f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    results: dict[str, Any] = {"threads": threads, "load_before": load_before,
                               "backend": args.backend, "datasets": {}}
    for name in args.datasets:
        row: dict[str, Any] = {}
        if not args.skip_scores:
            row["scores"] = scores(name, args)
            s = row["scores"]
            print(f"{name:14} score  nnbackend {s['nnbackend']:.4f}  sklearn {s['sklearn']:.4f}"
                  f"  difference {s['difference']:+.2e}  (not converged: "
                  f"{s['nnbackend_not_converged']} / {s['sklearn_not_converged']} of "
                  f"{args.seeds * args.folds})")
        row["epoch"] = epoch_times(name, args)
        e = row["epoch"]
        print(f"{name:14} epoch  nnbackend {e['nnbackend_ms']:.3f} ms  sklearn "
              f"{e['sklearn_ms']:.3f} ms  ratio {e['ratio']:.2f}  | fit besides the epochs "
              f"{e['nnbackend_fixed_ms']:.1f} / {e['sklearn_fixed_ms']:.1f} ms | fit / "
              f"{e['epochs'][1]} epochs ratio {e['fit_ratio']:.2f}  ({e['samples']} samples)")
        results["datasets"][name] = row
    results["load_after"] = os.getloadavg()
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*results["load_after"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
