"""Model descriptions (nnbackend.layers.describe/build): the round trip of every built-in layer
and nested containers on the backend matrix, user layers (built only when allowed, never
imported on a description's say-so), malformed descriptions and models that cannot be
described, each refused naming the place."""

from __future__ import annotations

import json
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Case

import nnbackend as nb
from nnbackend.backend import dtype_name
from nnbackend.layers import DescriptionError, build, describe, register
from nnbackend.layers import description as description_module


def _on(case: Case) -> dict[str, Any]:
    return {"backend": case.backend, "dtype": case.dtype_name}


def _uniform(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(-0.5, 0.5, size=shape)


# Every built-in layer, and containers nested in containers; each takes inputs of width 4.
MODELS: dict[str, Callable[[Case], nb.Module]] = {
    "linear": lambda c: nb.Linear(4, 3, seed=0, **_on(c)),
    "linear-no-bias-xavier": lambda c: nb.Linear(4, 3, bias=False, init="xavier", seed=1,
                                                 **_on(c)),
    "linear-init-function": lambda c: nb.Linear(4, 2, init=_uniform, seed=2, **_on(c)),
    "identity": lambda c: nb.Identity(),
    "relu": lambda c: nb.ReLU(),
    "sigmoid": lambda c: nb.Sigmoid(),
    "tanh": lambda c: nb.Tanh(),
    "leaky-relu": lambda c: nb.LeakyReLU(0.25),
    "softmax-axis0": lambda c: nb.Softmax(axis=0),
    "log-softmax": lambda c: nb.LogSoftmax(),
    "dropout": lambda c: nb.Dropout(0.3, seed=5),  # its stream's seed is an argument
    "empty-sequential": lambda c: nb.Sequential(),
    "mlp": lambda c: nb.Sequential(nb.Linear(4, 8, seed=3, **_on(c)), nb.ReLU(),
                                   nb.Linear(8, 3, seed=4, **_on(c))),
    "nested": lambda c: nb.Sequential(
        nb.Linear(4, 6, init="lecun", seed=5, **_on(c)), nb.Tanh(),
        nb.Sequential(nb.Linear(6, 5, bias=False, seed=6, **_on(c)), nb.LeakyReLU(0.1),
                      nb.Sequential(nb.Linear(5, 3, seed=7, **_on(c)), nb.Sigmoid())),
        nb.Sequential(), nb.Identity(), nb.Dropout(0.5, seed=1), nb.LogSoftmax(axis=-1)),
    "residual": lambda c: nb.Residual(nb.Sequential(nb.Linear(4, 6, seed=8, **_on(c)), nb.Tanh(),
                                                    nb.Linear(6, 4, seed=9, **_on(c)))),
    "parallel-add": lambda c: nb.Parallel(nb.Linear(4, 3, seed=10, **_on(c)),
                                          nb.Sequential(nb.Tanh(), nb.Linear(4, 3, seed=11,
                                                                             **_on(c)))),
    "parallel-concat-in-residual": lambda c: nb.Sequential(
        nb.Residual(nb.Sequential(
            nb.Parallel(nb.Linear(4, 1, seed=12, **_on(c)),
                        nb.Linear(4, 3, bias=False, seed=13, **_on(c)), merge="concat", axis=-1),
            nb.ReLU())),
        nb.Linear(4, 2, seed=14, **_on(c))),
}


def _entries(model: nb.Module) -> list[tuple[str, tuple[int, ...], str]]:
    return [(name, tuple(a.shape), dtype_name(a.dtype)) for name, a in model.state_dict().items()]


def _assert_same_outputs(case: Case, model: nb.Module, twin: nb.Module) -> None:
    """Inference, the training forward, ∂L/∂x and every gradient agree bit for bit."""
    model.zero_grad()
    twin.zero_grad()
    x = case.asarray(np.random.default_rng(0).standard_normal((5, 4)))
    np.testing.assert_array_equal(nb.to_numpy(twin(x)), nb.to_numpy(model(x)))
    (y, back), (y2, back2) = model.forward(x, input_grad=True), twin.forward(x, input_grad=True)
    np.testing.assert_array_equal(nb.to_numpy(y2), nb.to_numpy(y))
    dy = case.asarray(np.random.default_rng(1).standard_normal(tuple(y.shape)))
    np.testing.assert_array_equal(nb.to_numpy(back2(dy)), nb.to_numpy(back(dy)))
    for (name, p), (_, q) in zip(model.named_parameters(), twin.named_parameters(), strict=True):
        np.testing.assert_array_equal(nb.to_numpy(q.grad), nb.to_numpy(p.grad), err_msg=name)


# -------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("name", MODELS)
def test_every_layer_round_trips_through_json_on_every_backend(case: Case, name: str) -> None:
    model = MODELS[name](case)
    desc = describe(model)
    twin = build(json.loads(json.dumps(desc, allow_nan=False)), backend=case.backend)
    assert type(twin) is type(model)
    assert repr(twin) == repr(model)
    # (a Linear initialised by a function is rebuilt with the default initialiser, "he")
    again = describe(twin)
    assert again == (desc if name != "linear-init-function"
                     else {**desc, "config": {**desc["config"], "init": "he"}})
    assert _entries(twin) == _entries(model)  # names, shapes and dtypes, as PyTorch's
    for p in twin.parameters():
        case.check_placement(p.data)
    twin.load_state_dict(model.state_dict())
    _assert_same_outputs(case, model, twin)


def test_the_description_records_kinds_and_arguments() -> None:
    model = nb.Sequential(nb.Linear(4, 8, seed=0), nb.LeakyReLU(0.2),
                          nb.Sequential(nb.Linear(8, 3, bias=False, init="xavier",
                                                  dtype="float64", seed=1).to("float32"),
                                        nb.Softmax(axis=0)),
                          nb.Linear(3, 2, init=_uniform, seed=2))
    assert describe(model) == {"type": "Sequential", "config": {"layers": [
        {"type": "Linear", "config": {"in_features": 4, "out_features": 8, "bias": True,
                                      "init": "he", "dtype": "float32"}},
        {"type": "LeakyReLU", "config": {"negative_slope": 0.2}},
        {"type": "Sequential", "config": {"layers": [
            {"type": "Linear", "config": {"in_features": 8, "out_features": 3, "bias": False,
                                          "init": "xavier", "dtype": "float32"}},
            {"type": "Softmax", "config": {"axis": 0}},
        ]}},
        # an initialiser given as a function is not recorded: the weights come from the state
        {"type": "Linear", "config": {"in_features": 3, "out_features": 2, "bias": True,
                                      "dtype": "float32"}},
    ]}}


def test_build_can_choose_the_dtype(case: Case) -> None:
    if not case.has_float64:
        pytest.skip(f"{case.id} has no float64")
    other = "float32" if case.is_float64 else "float64"
    model = MODELS["nested"](case)
    twin = build(describe(model), backend=case.backend, dtype=other)
    assert [n for n, _, _ in _entries(twin)] == [n for n, _, _ in _entries(model)]
    for p in twin.parameters():
        case.check_placement(p.data, dtype=other)
    assert {layer["config"]["dtype"] for layer in _linear_configs(describe(twin))} == {other}


def _linear_configs(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict) and node.get("type") == "Linear":
        return [node]
    if isinstance(node, dict):
        return [c for value in node.values() for c in _linear_configs(value)]
    if isinstance(node, list):
        return [c for value in node for c in _linear_configs(value)]
    return []


def test_build_uses_the_default_backend() -> None:
    desc = describe(nb.Sequential(nb.Linear(2, 3, seed=0)))
    with nb.use_backend("array_api_strict") as be:
        twin = build(desc)
    assert twin.backend == be


# -------------------------------------------------------------------------------------------
# User layers


class Scale(nb.Module):
    """y = x ⊙ w, a layer written outside the package with a config()."""

    def __init__(self, n: int, *, start: float = 1.0, dtype: Any = None, backend: Any = None
                 ) -> None:
        super().__init__()
        be = nb.get_backend(backend)
        self.n, self.start = n, start
        self.weight = nb.Parameter(be.asarray(np.full(n, start), dtype=be.dtype(dtype)))

    def forward_pass(self, x: Any, ctx: nb.layers.Context) -> tuple[Any, Any]:
        w = self.weight.data

        def backprop(dy: Any) -> Any:
            self.weight.accumulate_grad(ctx.xp.sum(dy * x, axis=0))
            return dy * w

        return x * w, backprop

    def config(self) -> dict[str, Any]:
        return {"n": self.n, "start": self.start, "dtype": dtype_name(self.weight.dtype)}


_SCALE = f"{Scale.__module__}:Scale"


def _user_model(case: Case) -> nb.Sequential:
    return nb.Sequential(nb.Linear(4, 4, seed=0, **_on(case)), Scale(4, start=0.5, **_on(case)))


def test_a_user_layer_is_rebuilt_only_when_allowed(case: Case) -> None:
    model = _user_model(case)
    model.layers[1].weight.data = case.asarray([0.5, -1.0, 2.0, 3.0])  # type: ignore[attr-defined]
    desc = json.loads(json.dumps(describe(model)))
    assert desc["config"]["layers"][1] == {
        "type": _SCALE, "config": {"n": 4, "start": 0.5, "dtype": case.dtype_name}}
    with pytest.raises(DescriptionError, match=(
            rf"model description: model\.layers\[1\]: names the class '{_SCALE}', which is not "
            r"in allow_classes: pass allow_classes=\[TheClass\] to build it")) as info:
        build(desc, backend=case.backend)
    assert info.value.path == "model.layers[1]"
    for allowed in ([Scale], Scale, [_SCALE]):
        twin = build(desc, backend=case.backend, allow_classes=allowed)
        assert isinstance(twin, nb.Sequential)
        assert type(twin[1]) is Scale
        assert _entries(twin) == _entries(model)
        twin.load_state_dict(model.state_dict())
        _assert_same_outputs(case, model, twin)


def test_a_registered_user_layer_is_named_by_its_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(description_module, "_KINDS", dict(description_module._KINDS))
    assert register(Scale, "Scale") is Scale
    desc = describe(nb.Sequential(Scale(3)))
    assert desc["config"]["layers"][0]["type"] == "Scale"
    assert type(next(build(desc).children())) is Scale  # no allow_classes needed
    register(Scale, "Scale")  # again: the same class
    with pytest.raises(ValueError, match=r"kind 'Linear' is already nnbackend\.layers\.linear:"
                                         r"Linear"):
        register(Scale, "Linear")
    with pytest.raises(ValueError, match=r"a kind's name is a non-empty string without ':'"):
        register(Scale, "my:Scale")
    with pytest.raises(TypeError, match=r"register: expected a Module subclass, got <class "
                                        r"'int'>"):
        register(int)  # type: ignore[type-var]


def test_a_description_never_imports_the_classes_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint is untrusted input: a class it names is not imported (which would run the
    module's code) unless the caller asks for that name."""
    marker = tmp_path / "imported"
    (tmp_path / "nb_hostile_layers.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "import nnbackend as nb\n"
        "class Layer(nb.Module):\n"
        "    def config(self):\n"
        "        return {}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    desc = {"type": "Sequential", "config": {"layers": [
        {"type": "nb_hostile_layers:Layer", "config": {}}]}}
    for allowed in ((), [Scale], [_SCALE]):
        with pytest.raises(DescriptionError, match=r"model\.layers\[0\]: names the class "
                                                   r"'nb_hostile_layers:Layer'"):
            build(desc, allow_classes=allowed)
    assert not marker.exists()
    assert "nb_hostile_layers" not in sys.modules
    # Named by the caller, it is imported and built.
    model = build(desc, allow_classes=["nb_hostile_layers:Layer"])
    assert marker.exists()
    assert type(next(model.children())).__name__ == "Layer"
    monkeypatch.delitem(sys.modules, "nb_hostile_layers")


def test_allow_classes_is_checked() -> None:
    desc = describe(nb.ReLU())
    with pytest.raises(TypeError, match=r"allow_classes holds <class 'int'>, which is not a "
                                        r"Module subclass"):
        build(desc, allow_classes=[int])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"allow_classes names classes as "
                                         r"'package\.module:QualName', got 'Scale'"):
        build(desc, allow_classes=["Scale"])
    with pytest.raises(TypeError, match=r"allow_classes holds 'json:dumps', which is not a "
                                        r"Module subclass"):
        build(desc, allow_classes=["json:dumps"])


# -------------------------------------------------------------------------------------------
# Malformed descriptions: a DescriptionError naming the place, nothing built


def _linear(**config: Any) -> dict[str, Any]:
    return {"type": "Linear", "config": {"in_features": 4, "out_features": 2, **config}}


def _seq(*layers: Any, **config: Any) -> dict[str, Any]:
    return {"type": "Sequential", "config": {"layers": list(layers), **config}}


# The kinds of issue 8 in the message's sorted list, with any later built-in kinds between.
_KNOWN = r"(?:\w+, )*" + r", (?:\w+, )*".join((
    "Dropout", "Identity", "LeakyReLU", "Linear", "LogSoftmax", "Parallel", "ReLU", "Residual",
    "Sequential", "Sigmoid", "Softmax", "Tanh"))


@pytest.mark.parametrize(
    ("desc", "path", "pattern"),
    [
        ("Linear", "model", r"a layer is \{'type': str, 'config': dict\}, got str"),
        ({"type": "Linear"}, "model", r"a layer is .*, got \['type'\]"),
        ({**_linear(), "seed": 1}, "model", r"a layer is .*, got \['config', 'seed', 'type'\]"),
        ({"type": 3, "config": {}}, "model", r"'type' must be a string, got 3"),
        ({"type": "Lineer", "config": {}}, "model",
         rf"unknown layer kind 'Lineer'; the kinds are {_KNOWN}"),
        ({"type": "Linear", "config": [4, 2]}, "model (Linear)",
         r"'config' must be a dict with string keys, got \[4, 2\]"),
        ({"type": "Linear", "config": {"in_features": 4}}, "model (Linear)",
         r"missing argument 'out_features' of Linear"),
        (_linear(in_feature=3), "model (Linear)",
         r"unknown argument 'in_feature'; Linear takes in_features, out_features, bias, init, "
         r"dtype, seed"),
        (_linear(backend="torch"), "model (Linear)",
         r"a description does not choose placement \('backend'\): build\(backend=\.\.\.\)"),
        (_linear(in_features=0), "model (Linear)",
         r"Linear refused its arguments: Linear: in_features must be a positive integer, got 0"),
        (_linear(in_features="4"), "model (Linear)",
         r"Linear refused its arguments: Linear: in_features must be a positive integer, "
         r"got '4'"),
        (_linear(init="orthogonal"), "model (Linear)",
         r"Linear refused its arguments: unknown init 'orthogonal'"),
        (_linear(dtype="int8"), "model (Linear)", r"Linear refused its arguments: .*int8"),
        ({"type": "LeakyReLU", "config": {"negative_slope": -1}}, "model (LeakyReLU)",
         r"LeakyReLU refused its arguments: LeakyReLU: negative_slope must be positive"),
        ({"type": "ReLU", "config": {"inplace": True}}, "model (ReLU)",
         r"unknown argument 'inplace'; ReLU takes no arguments"),
        (_seq(_linear(), _seq(_seq({"type": "Lineer", "config": {}}))),
         "model.layers[1].layers[0].layers[0]", r"unknown layer kind 'Lineer'"),
        (_seq(_linear(), _seq({"type": "Tanh", "config": {}}, _linear(in_features=-2))),
         "model.layers[1].layers[1] (Linear)",
         r"Linear refused its arguments: Linear: in_features must be a positive integer, "
         r"got -2"),
        ({"type": "Sequential", "config": {"layers": 5}}, "model (Sequential)",
         r"Sequential refused its arguments: Sequential's config is \{'layers': \[layer, "
         r"\.\.\.\]\}"),
        ({"type": "Sequential", "config": {}}, "model (Sequential)",
         r"Sequential refused its arguments: Sequential's config is .*got keys \[\]"),
        (_seq(1), "model (Sequential)",
         r"Sequential refused its arguments: Sequential: layer 0 must be a Module, got int"),
        (_seq(_linear(), backend="numpy"), "model (Sequential)",
         r"a description does not choose placement \('backend'\)"),
        (_seq(_linear(), _linear(in_features=3)), "model (Sequential)",
         r"Sequential refused its arguments: Sequential: layer 1 Linear\(3→2\) expects 3 "
         r"features, but layer 0 Linear\(4→2\) produces 2"),
        (_linear(in_features=object()), "model.in_features", r"is a object, not a JSON value"),
        ({"type": "Residual", "config": {}}, "model (Residual)",
         r"missing argument 'block' of Residual"),
        ({"type": "Residual", "config": {"block": {"type": "Tanh", "config": {"x": 1}}}},
         "model.block (Tanh)", r"unknown argument 'x'; Tanh takes no arguments"),
        ({"type": "Parallel", "config": {"branches": [_linear()], "merge": "max"}},
         "model (Parallel)", r"Parallel refused its arguments: .*'max'"),
        ({"type": "Parallel", "config": {"branches": [_linear(), 3]}}, "model (Parallel)",
         r"Parallel refused its arguments: "),
    ],
)
def test_malformed_descriptions_are_refused_naming_the_place(
    desc: Any, path: str, pattern: str
) -> None:
    with pytest.raises(DescriptionError, match=rf"^model description: {_escaped(path)}: "
                                               rf"{pattern}") as info:
        build(desc)
    assert info.value.path == path


def _escaped(path: str) -> str:
    return path.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]") \
        .replace("(", r"\(").replace(")", r"\)")


def test_nesting_is_limited() -> None:
    desc: dict[str, Any] = _linear()
    for _ in range(40):  # a node and a list per level: 80 > MAX_DEPTH
        desc = _seq(desc)
    with pytest.raises(DescriptionError, match=r"nested more than 64 deep"):
        build(desc)
    values: Any = 4
    for _ in range(70):
        values = [values]
    with pytest.raises(DescriptionError, match=r"model\.in_features(\[0\])+: layers and values "
                                               r"are nested more than 64 deep"):
        build(_linear(in_features=values))


def test_max_elements_refuses_before_building_anything() -> None:
    """The sizes come from the arguments: a description of a huge model costs nothing."""
    huge = _seq(_linear(), {"type": "ReLU", "config": {}},
                _linear(in_features=2, out_features=200_000),
                _linear(in_features=200_000, out_features=100_000))
    elements = 4 * 2 + 2 + 2 * 200_000 + 200_000 + 200_000 * 100_000 + 100_000
    tracemalloc.start()
    try:
        with pytest.raises(DescriptionError, match=rf"^model description: model: its layers "
                                                   rf"would allocate {elements} array elements "
                                                   r"\(from their arguments\), more than the "
                                                   r"1000 allowed"):
            build(huge, max_elements=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20, peak
    small = _seq(_linear(), _linear(in_features=2, out_features=3, bias=False))
    assert len(build(small, max_elements=4 * 2 + 2 + 2 * 3).parameters()) == 3
    with pytest.raises(DescriptionError, match=r"would allocate 16 array elements"):
        build(small, max_elements=15)


# -------------------------------------------------------------------------------------------
# Models that cannot be described


class NoConfig(nb.Module):
    def forward_pass(self, x: Any, ctx: Any) -> tuple[Any, Any]:
        return x, lambda dy: dy


class ListConfig(NoConfig):
    def config(self) -> Any:
        return [1]


class NumpyValue(NoConfig):
    def config(self) -> dict[str, Any]:
        return {"slope": np.float32(0.5)}


class TypedDict(NoConfig):
    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.options = options or {}

    def config(self) -> dict[str, Any]:
        return {"options": self.options}


class Square(nb.Linear):
    """A subclass whose constructor takes other arguments than the config it inherits."""

    def __init__(self, n: int) -> None:
        super().__init__(n, n, seed=0)


def _tied() -> nb.Sequential:
    a, b = nb.Linear(3, 3, seed=0), nb.Linear(3, 3, seed=1)
    b.weight = a.weight
    return nb.Sequential(a, b)


_SHARED = nb.Linear(3, 3, seed=0)


@pytest.mark.parametrize(
    ("model", "pattern"),
    [
        (nb.Sequential(nb.ReLU(), NoConfig()),
         r"model\.layers\[1\] \(NoConfig\): NoConfig cannot be described: it has no config\(\)"),
        (ListConfig(), r"model \(ListConfig\): config\(\) must return a dict, got list"),
        (NumpyValue(), r"model\.slope: is a float32 \(np\.float32\(0\.5\)\); a config holds "
                       r"JSON values"),
        (TypedDict({"type": "cosine"}),
         r"model\.options: a dict argument may not have a 'type' key"),
        (TypedDict({1: "a"}),  # type: ignore[dict-item]
         r"model\.options: a dict argument has a key 1 that is not a"),
        (nb.Sequential(_SHARED, nb.ReLU(), _SHARED),
         r"model\.layers\[2\] \(Linear\): is the module at model\.layers\[0\] again"),
        (_tied(), r"model: parameter '1\.weight' is the parameter '0\.weight' \(tied weights\)"),
        (Square(3), rf"model \({Square.__module__}:Square\): unknown argument 'bias'; Square "
                    r"takes n"),
    ],
    ids=["no-config", "list-config", "numpy-value", "dict-with-type", "dict-int-key", "shared",
         "tied", "subclass"],
)
def test_models_that_cannot_be_described(model: nb.Module, pattern: str) -> None:
    with pytest.raises(DescriptionError, match=rf"^model description: {pattern}"):
        describe(model)


def test_describe_takes_a_module() -> None:
    with pytest.raises(TypeError, match=r"describe: expected a Module, got dict"):
        describe({"type": "ReLU"})  # type: ignore[arg-type]


def test_a_plain_dict_argument_round_trips() -> None:
    model = TypedDict({"kind": "cosine", "steps": [1, 2]})
    desc = describe(model)
    assert desc["config"] == {"options": {"kind": "cosine", "steps": [1, 2]}}
    twin = build(desc, allow_classes=[TypedDict])
    assert twin.options == model.options  # type: ignore[attr-defined]
