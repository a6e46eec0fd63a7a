"""skl2onnx converters for the estimators: a fitted MLP, alone or in a pipeline, to ONNX.

The fitted state is scikit-learn's own (``coefs_`` of shape (n_in, n_out), ``intercepts_``,
``activation``, ``out_activation_``, ``classes_``, the label binarizer), so skl2onnx's converters
and shape calculators for ``sklearn.neural_network.MLPClassifier`` and ``MLPRegressor`` convert
them as they are; :func:`register_onnx_converters` registers them for nnbackend's classes::

    import skl2onnx
    from nnbackend.sklearn import MLPClassifier, register_onnx_converters

    pipeline = make_pipeline(StandardScaler(), MLPClassifier()).fit(X, y)
    register_onnx_converters()
    onx = skl2onnx.to_onnx(pipeline, X[:1].astype(np.float32), options={"zipmap": False})

The graph computes in the input's dtype (float32 above, as skl2onnx does for every model),
whatever backend and dtype the estimator trained with. The classifier takes skl2onnx's
classifier options (``zipmap``, ``nocl``, ``output_class_labels``). Refused with a message:
a classifier fitted on multilabel targets, a regressor with several outputs and one fitted
with ``loss="poisson"`` (output exp z), which skl2onnx's converters do not handle (for
scikit-learn's MLP either).
"""

from __future__ import annotations

from typing import Any

__all__ = ["register_onnx_converters"]

EXTRA = "nnbackend[sklearn-onnx]"
_SUPPORTED_OUTPUTS = ("identity", "logistic", "softmax")


def _require(module: str) -> Any:
    from ..onnx._deps import require  # here: importing nnbackend.sklearn stays light

    return require(module, needed_by="register_onnx_converters", extra=EXTRA)


def _checked(convert: Any) -> Any:
    """skl2onnx's converter, after checking that the estimator's output has an ONNX form."""

    def converter(scope: Any, operator: Any, container: Any) -> None:
        est = operator.raw_operator
        if est.out_activation_ not in _SUPPORTED_OUTPUTS:
            msg = (f"{type(est).__name__} with output activation {est.out_activation_!r} "
                   f"(loss={getattr(est, 'loss', None)!r}) has no skl2onnx converter; the "
                   f"converters support the outputs {_SUPPORTED_OUTPUTS}")
            raise NotImplementedError(msg)
        binarizer = getattr(est, "_label_binarizer", None)
        if binarizer is not None and binarizer.y_type_ == "multilabel-indicator":
            # skl2onnx's classifier converter takes the labels for classes (two labels read
            # as a binary problem): its outputs would have the wrong shape
            msg = (f"{type(est).__name__} fitted on multilabel targets has no skl2onnx "
                   "converter (it converts multiclass and binary classifiers)")
            raise NotImplementedError(msg)
        if binarizer is None and est.n_outputs_ > 1:
            # skl2onnx's regressor converter reshapes the output to (N, 1): N·K rows
            msg = (f"{type(est).__name__} with {est.n_outputs_} outputs has no skl2onnx "
                   "converter (it converts single-output regressors)")
            raise NotImplementedError(msg)
        convert(scope, operator, container)

    return converter


def register_onnx_converters() -> None:
    """Register :class:`MLPClassifier` and :class:`MLPRegressor` with skl2onnx (idempotent).

    Afterwards ``skl2onnx.to_onnx`` and ``convert_sklearn`` convert fitted estimators and the
    pipelines that hold them.

    Raises
    ------
    ImportError
        When skl2onnx is not installed (``pip install "nnbackend[sklearn-onnx]"``).
    """
    skl2onnx = _require("skl2onnx")
    shapes = _require("skl2onnx.common.shape_calculator")
    mlp = _require("skl2onnx.operator_converters.multilayer_perceptron")
    from ._classifier import MLPClassifier
    from ._regressor import MLPRegressor

    skl2onnx.update_registered_converter(
        MLPClassifier, "NnbackendMLPClassifier",
        shapes.calculate_linear_classifier_output_shapes,
        _checked(mlp.convert_sklearn_mlp_classifier),
        options={"zipmap": [True, False, "columns"], "output_class_labels": [False, True],
                 "nocl": [True, False]})
    skl2onnx.update_registered_converter(
        MLPRegressor, "NnbackendMLPRegressor",
        shapes.calculate_linear_regressor_output_shapes,
        _checked(mlp.convert_sklearn_mlp_regressor))
