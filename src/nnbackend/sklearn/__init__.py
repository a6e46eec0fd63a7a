"""scikit-learn estimators trained by nnbackend: ``MLPClassifier`` and ``MLPRegressor``.

Drop-in counterparts of ``sklearn.neural_network.MLPClassifier`` and ``MLPRegressor``: the same
parameters, defaults, fitted attributes and training algorithm (initial weights, shuffling and
early-stopping split drawn from the same ``random_state``), with the math on an nnbackend
backend chosen by ``backend=`` or, under ``sklearn.config_context(array_api_dispatch=True)``,
by the input arrays (PyTorch, CuPy, array-api-strict, ...), where the outputs then stay::

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from nnbackend.sklearn import MLPClassifier

    clf = make_pipeline(StandardScaler(), MLPClassifier(max_iter=50, backend="cupy"))
    clf.fit(X, y).score(X_test, y_test)

A fitted estimator, alone or in a pipeline, converts to ONNX with skl2onnx once
:func:`register_onnx_converters` has registered them.

Importing this package imports scikit-learn (``import nnbackend`` does not).
"""

from ._base import BaseMultilayerPerceptron
from ._classifier import MLPClassifier
from ._onnx import register_onnx_converters
from ._regressor import MLPRegressor

__all__ = ["BaseMultilayerPerceptron", "MLPClassifier", "MLPRegressor",
           "register_onnx_converters"]
