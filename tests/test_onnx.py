"""ONNX export of the feed-forward layers, checked by running the files in onnxruntime.

For every converted layer, a small model on the backend of the ``case`` row is exported with
an example batch of 3, checked by ``onnx.checker`` (``full_check``), and run by onnxruntime at
batch 3 and at batch 5 (the batch axis is dynamic); the outputs must match the model's own
(``nnbackend.predict``, eval mode) to rtol 1e-5, atol 1e-6.

The export is float32 (what deployment runs) on every row: on the float64 rows the float32
graph is compared with the float64 model, an independent higher-precision reference, with the
same tolerance (the weights' and inputs' float32 rounding, ~6e-8 relative, stays far inside
it for these small models). onnxruntime's CPU kernels do not all take doubles (Conv, Erf),
so a float64 export is checked separately for a model whose operators all do, on the float64
rows, to 1e-12.

Plumbing tests (error messages, names, the atomic write, modes, the graphs of other opsets
and dynamic axes, which do not depend on the backend) skip the JAX row, where every new shape
costs a compilation of each operation; the conversion math of every layer runs on every row
(on JAX at the example's batch size).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import nnbackend.onnx as nx  # noqa: E402
from nnbackend.cli import main  # noqa: E402
from nnbackend.layers import Context, Module  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6


def _lin(a: int, b: int, **kw: Any) -> nb.Linear:
    return nb.Linear(a, b, seed=a * 31 + b, **kw)


def _head(act: Module) -> Module:
    return nb.Sequential(_lin(5, 6), act)


# (id, builder, sample shape without the batch axis)
MODELS: list[tuple[str, Callable[[], Module], tuple[int, ...]]] = [
    ("linear", lambda: _lin(5, 4), (5,)),
    ("linear-nobias", lambda: _lin(5, 4, bias=False), (5,)),
    ("linear-3d", lambda: nb.Sequential(_lin(5, 4), nb.Tanh(), _lin(4, 3)), (2, 5)),
    ("identity", lambda: _head(nb.Identity()), (5,)),
    ("relu", lambda: _head(nb.ReLU()), (5,)),
    ("leaky-relu", lambda: _head(nb.LeakyReLU(0.2)), (5,)),
    ("sigmoid", lambda: _head(nb.Sigmoid()), (5,)),
    ("tanh", lambda: _head(nb.Tanh()), (5,)),
    ("softmax-axis1", lambda: nb.Sequential(_lin(5, 4), nb.Softmax(axis=1)), (3, 5)),
    ("log-softmax", lambda: _head(nb.LogSoftmax()), (5,)),
    ("gelu", lambda: _head(nb.GELU()), (5,)),
    ("gelu-tanh", lambda: _head(nb.GELU(approximate="tanh")), (5,)),
    ("silu", lambda: _head(nb.SiLU()), (5,)),
    ("softplus", lambda: _head(nb.Softplus()), (5,)),
    ("softplus-beta-threshold", lambda: _head(nb.Softplus(beta=2.0, threshold=1.0)), (5,)),
    ("sequential-nested", lambda: nb.Sequential(nb.Sequential(_lin(5, 6), nb.ReLU()),
                                                nb.Sequential(_lin(6, 3))), (5,)),
    ("residual", lambda: nb.Residual(nb.Sequential(_lin(5, 7), nb.Tanh(), _lin(7, 5))), (5,)),
    ("parallel-add", lambda: nb.Parallel(_lin(5, 3), nb.Sequential(_lin(5, 3), nb.ReLU())),
     (5,)),
    ("parallel-concat", lambda: nb.Sequential(
        nb.Parallel(_lin(5, 3), _lin(5, 2), merge="concat"), nb.Tanh()), (5,)),
    ("parallel-concat-axis1", lambda: nb.Parallel(
        nb.Conv1d(2, 3, 3, seed=1), nb.Conv1d(2, 3, 5, padding=1, seed=2), merge="concat",
        axis=1), (2, 8)),
    ("flatten", lambda: nb.Sequential(nb.Conv2d(2, 3, 3, seed=1), nb.Flatten(), _lin(12, 4)),
     (2, 4, 4)),
    ("flatten-middle", lambda: nb.Sequential(nb.Conv2d(2, 3, 3, seed=1), nb.Flatten(1, 2)),
     (2, 4, 5)),
    ("unflatten", lambda: nb.Sequential(_lin(5, 12), nb.Unflatten(1, (3, 4)), nb.Softmax(1)),
     (5,)),
    ("unflatten-inferred", lambda: nb.Sequential(_lin(5, 12), nb.Unflatten(1, (-1, 4))),
     (5,)),
    ("dropout", lambda: nb.Sequential(_lin(5, 6), nb.Dropout(0.5, seed=0), nb.ReLU()), (5,)),
    ("dropout2d", lambda: nb.Sequential(nb.Conv2d(2, 3, 3, seed=1), nb.Dropout2d(0.5, seed=0)),
     (2, 5, 5)),
    ("conv1d", lambda: nb.Conv1d(2, 4, 3, stride=2, padding=1, seed=1), (2, 9)),
    ("conv1d-same-even", lambda: nb.Conv1d(2, 3, 4, padding="same", dilation=2, seed=1),
     (2, 11)),
    ("conv2d-groups", lambda: nb.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2),
                                        dilation=(1, 2), groups=2, seed=1), (4, 7, 6)),
    ("conv2d-same-even", lambda: nb.Conv2d(2, 3, (2, 4), padding="same", seed=1), (2, 6, 7)),
    ("conv2d-valid-nobias", lambda: nb.Conv2d(2, 3, 3, padding="valid", bias=False, seed=1),
     (2, 5, 6)),
    ("maxpool1d", lambda: nb.Sequential(nb.Conv1d(2, 2, 1, seed=1),
                                        nb.MaxPool1d(3, stride=2, padding=1, ceil_mode=True)),
     (2, 10)),
    ("maxpool2d", lambda: nb.Sequential(nb.Conv2d(2, 2, 1, seed=1), nb.MaxPool2d(2)),
     (2, 6, 7)),
    ("maxpool2d-dilated-ceil", lambda: nb.Sequential(
        nb.Conv2d(2, 2, 1, seed=1),
        nb.MaxPool2d(3, stride=2, padding=1, dilation=2, ceil_mode=True)), (2, 11, 10)),
    ("maxpool1d-last-window-dropped", lambda: nb.Sequential(
        nb.Conv1d(2, 2, 1, seed=1), nb.MaxPool1d(2, stride=2, padding=1, ceil_mode=True)),
     (2, 5)),
    ("avgpool2d-last-window-dropped", lambda: nb.Sequential(
        nb.Conv2d(2, 2, 1, seed=1), nb.AvgPool2d(2, stride=3, padding=1, ceil_mode=True)),
     (2, 6, 7)),
    ("avgpool1d", lambda: nb.Sequential(
        nb.Conv1d(2, 2, 1, seed=1),
        nb.AvgPool1d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
     (2, 10)),
    ("avgpool2d", lambda: nb.Sequential(nb.Conv2d(2, 2, 1, seed=1), nb.AvgPool2d(2)),
     (2, 6, 7)),
    ("avgpool2d-pad-ceil", lambda: nb.Sequential(
        nb.Conv2d(2, 2, 1, seed=1),
        nb.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
     (2, 8, 9)),
    ("avgpool2d-include-pad", lambda: nb.Sequential(
        nb.Conv2d(2, 2, 1, seed=1), nb.AvgPool2d(3, stride=2, padding=1)), (2, 8, 9)),
    ("avgpool2d-divisor", lambda: nb.Sequential(
        nb.Conv2d(2, 2, 1, seed=1), nb.AvgPool2d(3, stride=2, padding=1, divisor_override=4)),
     (2, 7, 9)),
    ("adaptive-global", lambda: nb.Sequential(nb.Conv2d(2, 3, 3, seed=1),
                                              nb.AdaptiveAvgPool2d(1), nb.Flatten()), (2, 6, 7)),
    ("adaptive-dividing", lambda: nb.Sequential(nb.Conv2d(2, 3, 1, seed=1),
                                                nb.AdaptiveAvgPool2d((3, 2))), (2, 6, 8)),
    ("adaptive-non-dividing", lambda: nb.Sequential(nb.Conv2d(2, 3, 1, seed=1),
                                                    nb.AdaptiveAvgPool2d((4, 3))), (2, 7, 5)),
    ("adaptive-none", lambda: nb.Sequential(nb.Conv2d(2, 3, 1, seed=1),
                                            nb.AdaptiveAvgPool2d((None, 2))), (2, 3, 5)),
    ("batchnorm1d", lambda: nb.Sequential(_lin(5, 4), nb.BatchNorm1d(4)), (5,)),
    ("batchnorm1d-3d", lambda: nb.Sequential(nb.Conv1d(2, 4, 3, seed=1), nb.BatchNorm1d(4)),
     (2, 7)),
    ("batchnorm2d", lambda: nb.Sequential(nb.Conv2d(2, 3, 3, seed=1), nb.BatchNorm2d(3)),
     (2, 5, 5)),
    ("batchnorm2d-no-affine", lambda: nb.Sequential(nb.Conv2d(2, 3, 3, seed=1),
                                                    nb.BatchNorm2d(3, affine=False)), (2, 5, 5)),
    ("batchnorm-batch-statistics", lambda: nb.Sequential(
        nb.Conv2d(2, 3, 3, seed=1), nb.BatchNorm2d(3, track_running_stats=False)), (2, 5, 5)),
    ("syncbatchnorm", lambda: nb.Sequential(nb.Conv2d(2, 3, 3, seed=1), nb.SyncBatchNorm(3)),
     (2, 5, 5)),
    ("layernorm", lambda: nb.Sequential(_lin(5, 6), nb.LayerNorm(6)), (5,)),
    ("layernorm-2axes", lambda: nb.Sequential(_lin(5, 4), nb.LayerNorm((3, 4), eps=1e-3)),
     (3, 5)),
    ("layernorm-no-affine", lambda: nb.Sequential(_lin(5, 6),
                                                  nb.LayerNorm(6, elementwise_affine=False)),
     (5,)),
    ("rmsnorm", lambda: nb.Sequential(_lin(5, 6), nb.RMSNorm(6)), (5,)),
    ("rmsnorm-2axes", lambda: nb.Sequential(_lin(5, 4), nb.RMSNorm((3, 4), eps=1e-3)), (3, 5)),
]


def _randomized(model: Module, seed: int = 0) -> Module:
    """Non-trivial parameters and running statistics (biases and shifts not zero, variances
    not one), so that every term of a converter counts."""
    rng = np.random.default_rng(seed)
    for _, p in model.named_parameters():
        p.data = np.asarray(rng.standard_normal(p.shape) * 0.5, dtype=np.float32)
    for m in model.modules():
        if getattr(m, "running_mean", None) is not None:
            n = m.running_mean.shape
            m.running_mean = rng.standard_normal(n).astype(np.float32) * 0.3
            m.running_var = rng.uniform(0.5, 1.5, n).astype(np.float32)
    return model


def _on(case: Any, model: Module) -> Module:
    return _randomized(model).to(case.backend, dtype=case.dtype_name)


def _skip_jax(case: Any) -> None:
    if case.backend.name == "jax":
        pytest.skip("plumbing only: the conversion math runs on this row in the layer tests")


def check_export(case: Any, model: Module, sample: tuple[int, ...], path: Path, *,
                 batches: tuple[int, ...] = (3, 5), **options: Any) -> Any:
    """Export at batch ``batches[0]``, check, run at every batch size (the first from the
    backend's array, the others from host data); return the proto.

    On the JAX row, at the example's batch size only: the graph does not depend on the
    backend, and each new shape costs JAX a compilation of every operation.
    """
    if case.backend.name == "jax":
        batches = batches[:1]
    rng = np.random.default_rng(1)
    proto = nx.export(model, path, case.asarray(rng.standard_normal((batches[0], *sample))),
                      **options)
    onnx.checker.check_model(str(path), full_check=True)
    for n in batches:
        x = rng.standard_normal((n, *sample))
        xb = case.asarray(x)
        want = nb.to_numpy(nb.predict(model, xb))
        # run takes the backend's array too (an explicit copy: the GPU-like rows refuse any
        # other), host data at the other batch sizes
        got = nx.run(path, xb if n == batches[0] else x)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    return proto


@pytest.mark.parametrize(("build", "sample"), [pytest.param(b, s, id=i) for i, b, s in MODELS])
def test_layer_matches_onnxruntime(case: Any, build: Callable[[], Module],
                                   sample: tuple[int, ...], tmp_path: Path) -> None:
    proto = check_export(case, _on(case, build()), sample, tmp_path / "model.onnx")
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch"
    assert proto.opset_import[0].version == 17


def test_newer_opsets_write_reduce_axes_as_inputs(case: Any, tmp_path: Path) -> None:
    """From opset 18 the Reduce* axes are an input, not an attribute."""
    _skip_jax(case)
    model = _on(case, nb.Sequential(
        nb.Conv2d(2, 3, 1, seed=1), nb.AdaptiveAvgPool2d((2, 3)),
        nb.BatchNorm2d(3, track_running_stats=False), nb.Flatten(), nb.RMSNorm(18)))
    for opset in (18, 21):
        check_export(case, model, (2, 5, 7), tmp_path / f"m{opset}.onnx", opset=opset)


def test_dynamic_sequence_axis(case: Any, tmp_path: Path) -> None:
    """A named dynamic axis besides the batch: (N, T, F) rows of any T, through MatMul and a
    Flatten that merges two dynamic axes (its target shape computed in the graph)."""
    _skip_jax(case)
    model = _on(case, nb.Sequential(_lin(4, 6), nb.GELU(), nb.Flatten(0, 1), nb.LayerNorm(6)))
    path = tmp_path / "seq.onnx"
    rng = np.random.default_rng(2)
    proto = nx.export(model, path, case.asarray(rng.standard_normal((3, 5, 4))),
                      dynamic_axes={"input": {1: "sequence"}})
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence", 4]
    for shape in ((3, 5, 4), (2, 7, 4), (1, 1, 4)):
        x = rng.standard_normal(shape)
        want = nb.to_numpy(nb.predict(model, case.asarray(x)))
        np.testing.assert_allclose(nx.run(path, x), want, rtol=RTOL, atol=ATOL)


def test_dynamic_length_of_convolutions(case: Any, tmp_path: Path) -> None:
    """(N, C, L) inputs of any length L through "same" and strided convolutions and pooling."""
    _skip_jax(case)
    model = _on(case, nb.Sequential(
        nb.Conv1d(2, 3, 4, padding="same", seed=1), nb.ReLU(),
        nb.Conv1d(3, 3, 3, stride=2, padding=1, seed=2), nb.MaxPool1d(2), nb.BatchNorm1d(3)))
    path = tmp_path / "conv.onnx"
    rng = np.random.default_rng(4)
    proto = nx.export(model, path, case.asarray(rng.standard_normal((2, 2, 12))),
                      dynamic_axes={"input": {2: "length"}})
    out = [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert out[:2] == ["batch", 3] and isinstance(out[2], str)
    for shape in ((2, 2, 12), (3, 2, 9), (1, 2, 31)):
        x = rng.standard_normal(shape)
        want = nb.to_numpy(nb.predict(model, case.asarray(x)))
        np.testing.assert_allclose(nx.run(path, x), want, rtol=RTOL, atol=ATOL)


def test_float64_export(case: Any, tmp_path: Path) -> None:
    """``dtype="float64"``: a double graph, which matches float64 outputs to 1e-12."""
    if not case.is_float64:
        pytest.skip("a float64 export is compared with float64 outputs")
    model = _on(case, nb.Sequential(_lin(5, 6), nb.Tanh(), nb.Residual(_lin(6, 6)),
                                    nb.Sigmoid(), _lin(6, 3), nb.Softmax()))
    path = tmp_path / "f64.onnx"
    x = np.random.default_rng(3).standard_normal((4, 5))
    proto = nx.export(model, path, case.asarray(x), dtype="float64")
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    got = nx.run(path, x)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, nb.to_numpy(nb.predict(model, case.asarray(x))),
                               rtol=1e-12, atol=1e-14)


def test_tied_parameters_give_one_initializer(case: Any, tmp_path: Path) -> None:
    """A layer used twice: its weight and bias are one initializer each, read twice."""
    shared = _lin(5, 5)
    model = _on(case, nb.Sequential(shared, nb.Tanh(), shared))
    proto = check_export(case, model, (5,), tmp_path / "tied.onnx")
    assert len(proto.graph.initializer) == 2
    gemms = [n for n in proto.graph.node if n.op_type == "Gemm"]
    assert len(gemms) == 2 and gemms[0].input[1:] == gemms[1].input[1:]


class Scale(Module):
    """A user-defined layer: y = 2x."""

    def forward_pass(self, x: Any, ctx: Context) -> tuple[Any, Any]:
        return x * 2.0, lambda dy: dy * 2.0


def test_unsupported_layer_is_named_with_its_path(case: Any, tmp_path: Path) -> None:
    _skip_jax(case)
    model = _on(case, nb.Sequential(_lin(5, 5), nb.Residual(nb.Sequential(_lin(5, 5),
                                                                          Scale()))))
    path = tmp_path / "bad.onnx"
    with pytest.raises(nx.UnsupportedLayerError, match=r"Scale at '1\.block\.1'") as info:
        nx.export(model, path, case.asarray(np.ones((2, 5))))
    assert "Supported layers: " in str(info.value) and "Conv2d" in str(info.value)
    assert "nnbackend.onnx.converter" in str(info.value)
    assert not path.exists()
    assert isinstance(info.value, NotImplementedError)


def test_subclass_that_changes_the_computation_is_refused(case: Any, tmp_path: Path) -> None:
    """A subclass is exported as its parent only if it keeps the parent's computation."""
    _skip_jax(case)

    class Kept(nb.ReLU):
        pass

    class Changed(nb.ReLU):
        def infer(self, x: Any, ctx: Context) -> Any:
            return x

    check_export(case, _on(case, nb.Sequential(_lin(5, 4), Kept())), (5,),
                 tmp_path / "kept.onnx", batches=(3,))
    with pytest.raises(nx.UnsupportedLayerError, match=r"Changed at '1'"):
        nx.export(_on(case, nb.Sequential(_lin(5, 4), Changed())), tmp_path / "changed.onnx",
                  case.asarray(np.ones((2, 5))))


def test_a_registered_converter_exports_a_user_layer(case: Any, tmp_path: Path) -> None:
    _skip_jax(case)

    class Double(Scale):
        pass

    @nx.converter(Double)
    def _double(g: nx.GraphBuilder, m: Double, x: nx.Value, path: str) -> nx.Value:
        return x.derive(g.node("Mul", [x.name, g.scalar(2.0)], hint=path))

    check_export(case, _on(case, nb.Sequential(_lin(5, 4), Double())), (5,),
                 tmp_path / "double.onnx", batches=(3,))


def test_failed_export_leaves_no_partial_file(case: Any, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure while writing leaves the old file as it was and no temporary file."""
    _skip_jax(case)
    model = _on(case, nb.Sequential(_lin(5, 4), nb.ReLU()))
    x = case.asarray(np.ones((2, 5)))
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    from nnbackend.onnx import _export

    monkeypatch.setattr(_export.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        nx.export(model, path, x)
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    with pytest.raises(nx.UnsupportedLayerError):
        nx.export(nb.Sequential(model, Scale()), path, x)
    assert path.read_bytes() == b"old"
    nx.export(model, path, x)
    onnx.checker.check_model(str(path), full_check=True)


def test_modes_restored_and_dropout_exported_as_identity(case: Any, tmp_path: Path) -> None:
    _skip_jax(case)
    model = _on(case, nb.Sequential(_lin(5, 6), nb.Dropout(0.5, seed=0), nb.BatchNorm1d(6)))
    model.train()
    model[2].eval()  # a sub-module set apart keeps its own mode
    check_export(case, model, (5,), tmp_path / "m.onnx", batches=(4,))
    assert [m.training for m in model.modules()] == [True, True, True, False]
    assert not any(n.op_type == "Dropout" for n in onnx.load(str(tmp_path / "m.onnx")).graph.node)


def test_arguments_are_checked(case: Any, tmp_path: Path) -> None:
    _skip_jax(case)
    model = _on(case, _lin(5, 4))
    x = case.asarray(np.ones((2, 5)))
    with pytest.raises(ValueError, match="opset 16 is not supported: nnbackend writes opsets 17"):
        nx.export(model, tmp_path / "m.onnx", x, opset=16)
    with pytest.raises(ValueError, match="input_names must be 1 distinct"):
        nx.export(model, tmp_path / "m.onnx", x, input_names=("a", "b"))
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        nx.export(model, tmp_path / "m.onnx", x, dtype="float16")
    with pytest.raises(ValueError, match="dynamic_axes names 'x', which is not an input"):
        nx.export(model, tmp_path / "m.onnx", x, dynamic_axes={"x": [1]})
    refused = nb.Sequential(nb.Conv2d(2, 2, 1, seed=1),
                            nb.AvgPool2d(3, stride=2, ceil_mode=True, divisor_override=2))
    with pytest.raises(nx.UnsupportedLayerError, match=r"AvgPool2d at '1'.*divisor_override"):
        nx.export(_on(case, refused), tmp_path / "m.onnx", case.asarray(np.ones((1, 2, 6, 6))))
    host = nx.export(model, tmp_path / "host.onnx", np.ones((2, 5)))  # host data: cast
    assert host.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    with pytest.raises(TypeError, match="neither host data"):
        nx.export(model, tmp_path / "m.onnx", object())
    proto = nx.export(model, tmp_path / "named.onnx", x, input_names=["features"],
                      output_names=["logits"])
    assert onnx.load(str(tmp_path / "named.onnx")) == proto
    assert [i.name for i in proto.graph.input] == ["features"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert not list(tmp_path.glob("*.tmp"))


def test_graph_builder_names_constants_and_parameters() -> None:
    """Fresh names from hints, constants deduplicated by value, a parameter (or array)
    object once whatever its uses; node outputs named after the hint."""
    g = nx.GraphBuilder(17, "float32")
    assert [g.name("0.weight"), g.name("0.weight"), g.name("a b")] == \
        ["0.weight", "0.weight_1", "a_b"]
    assert g.constant([1, 2]) == g.constant([1, 2]) != g.constant([2, 1])
    assert onnx.numpy_helper.to_array(g.initializers[-1]).dtype == np.int64
    g.scalar(0.5)  # a 0-d constant stays 0-d (a (1,) one would broadcast 0-d values to (1,))
    assert tuple(g.initializers[-1].dims) == ()
    assert g.constant(np.float32(0.5)) == g.scalar(0.5)
    p = nb.Parameter(np.ones((2, 3), dtype=np.float64), "w")
    w = g.parameter(p, "w")
    assert g.parameter(p, "other") == w
    assert onnx.numpy_helper.to_array(g.initializers[-1]).dtype == np.float32
    a, b = g.node("Split", ["x"], outputs=2, hint="s", axis=0, num_outputs=2)
    assert a != b and g.node("Relu", [a], hint="r") == "r:Relu"
    with pytest.raises(ValueError, match="used twice"):
        g.reserve("r:Relu")


def test_missing_onnx_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"nnbackend\[onnx\]"):
        nx.export(_lin(2, 2), tmp_path / "m.onnx", np.ones((1, 2), dtype=np.float32))


# ---------------------------------------------------------------------- the command line


@pytest.mark.parametrize("options", [
    pytest.param(("--hidden", "16"), id="mlp-digits"),
    pytest.param(("--model", "cnn", "--hidden", "16", "--batch-size", "64"), id="cnn-digits"),
])
def test_cli_export_of_a_trained_checkpoint(options: tuple[str, ...], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """``nnbackend export`` on ``train --save`` checkpoints of the MLP and the CNN (digits as
    8×8 images): onnxruntime's outputs on the data set match the rebuilt model's, computed in
    float64 (the module's independent higher-precision reference: the float32 model's own
    outputs and onnxruntime's are each ~1e-6 from it for the CNN, in different directions, so
    two float32 sums can be 1.3e-6 apart on a logit near 0), as does its float32 predict."""
    monkeypatch.setenv("NNBACKEND", "numpy")
    ckpt, out = tmp_path / "model.npz", tmp_path / "model.onnx"
    assert main(["train", "--epochs", "1", "--no-progress", "--json", "--save", str(ckpt),
                 *options]) == 0
    capsys.readouterr()
    assert main(["export", str(ckpt), str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (ONNX opset 17" in printed
    cnn = "cnn" in options
    assert ("input input: float32 [batch, 1, 8, 8]" if cnn
            else "input input: float32 [batch, 64]") in printed
    assert "output output: float32 [batch, 10]" in printed
    X, _ = nb.datasets.load_digits(images=cnn)
    model, _ = nb.checkpoint.load_model(ckpt, backend="numpy")
    float32 = nb.to_numpy(nb.predict(model, X[:200]))
    want = nb.to_numpy(nb.predict(model.to(dtype="float64"), X[:200].astype(np.float64)))
    np.testing.assert_allclose(nx.run(out, X[:200]), want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(float32, want, rtol=RTOL, atol=ATOL)


def test_cli_export_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NNBACKEND", "numpy")
    ckpt = tmp_path / "m.npz"
    nb.checkpoint.save(ckpt, nb.Sequential(_lin(3, 2)))
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(ckpt), str(tmp_path / "m.onnx"), "--opset", "16"])
    assert exit_info.value.code == 2
    assert "--opset: 16 is below 17" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", str(ckpt), str(tmp_path / "m.txt")])
    assert "does not end in .onnx" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.npz"), str(tmp_path / "m.onnx")]) == 1
    assert "missing.npz" in capsys.readouterr().err
    assert main(["export", str(ckpt), str(tmp_path / "m.onnx")]) == 0
    assert "input input: float32 [batch, 3]" in capsys.readouterr().out
    assert main(["export", str(ckpt), str(tmp_path / "m.onnx"), "--input-shape", "4"]) == 1
    assert "expected input of shape (N, 3), got (1, 4)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", str(ckpt), str(tmp_path / "m.onnx"), "--input-shape", "0,x"])
    assert "expected positive integers" in capsys.readouterr().err
    assert os.path.exists(tmp_path / "m.onnx")
