"""scikit-learn's own estimator checks on nnbackend.sklearn's MLPClassifier and MLPRegressor.

``parametrize_with_checks`` yields every check scikit-learn runs on its estimators, the Array API
ones included (they run for every namespace scikit-learn knows, because the estimators declare
``array_api_support``; SCIPY_ARRAY_API=1, set in conftest.py, keeps ``check_array_api_input`` from
skipping). No check is expected to fail. The checks scikit-learn itself skips say why (no
``decision_function``; no CUDA, XPU or MPS device; dpnp not installed); the one skip added here is
the CuPy row where CuPy is installed without a usable CUDA device (the check cannot create its
arrays there).
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("sklearn")

from sklearn.utils.estimator_checks import parametrize_with_checks

import nnbackend as nb
from nnbackend.sklearn import MLPClassifier, MLPRegressor

# Expected failures, by check name, with the reason: none.
EXPECTED_FAILED: dict[str, str] = {}


def _cupy_unusable() -> str | None:
    row = next(r for r in nb.available_backends() if r.name == "cupy")
    return None if row.available else row.reason


# The checks fit with the default max_iter on data they choose; hitting it is not a failure.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(
    [MLPClassifier(), MLPRegressor()],
    expected_failed_checks=lambda est: EXPECTED_FAILED,
)
def test_sklearn_estimator_checks(estimator: Any, check: Any) -> None:
    keywords = getattr(check, "keywords", {})
    namespaces = {keywords.get("array_namespace")}
    for key in ("X_ns_and_device", "other_ns_and_device"):
        if key in keywords:
            namespaces.add(keywords[key].xp)
    if "cupy" in namespaces and (reason := _cupy_unusable()):
        pytest.skip(f"CuPy is installed but not usable here: {reason}")
    check(estimator)
