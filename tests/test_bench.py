"""The benchmark tools: the package layout, the counting namespace, the hand-written NumPy floor,
``run_cli``.

No timing is asserted anywhere: only counts, math, and the shape of what is printed and written.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import io
import itertools
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import array_api_compat
import array_api_compat.numpy
import numpy as np
import pytest
import threadpoolctl

import nnbackend as nb
from nnbackend import bench
from nnbackend.bench import CountingNamespace, NumpyMLP

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def cupy_usable() -> bool:
    return any(row.name == "cupy" and row.available for row in nb.available_backends())


# ------------------------------------------------------------------------ package layout

# the order of the package docstring's table: each module imports only modules above it
MODULES = ("counting", "specs", "convspecs", "seqspecs", "floor", "convfloor", "jaxjit",
           "timing", "workloads", "convworkloads", "seqworkloads", "memory", "breakdown", "calls",
           "plot", "report", "distributed")


def test_the_package_reexports_exactly_its_modules_public_names() -> None:
    owners: dict[str, str] = {}
    for name in MODULES:
        module = importlib.import_module(f"nnbackend.bench.{name}")
        for public in module.__all__:
            assert public not in owners, f"{public} in both {owners.get(public)} and {name}"
            owners[public] = name
            assert getattr(bench, public) is getattr(module, public)
    assert sorted(owners) == sorted(bench.__all__)


def test_the_modules_import_only_modules_listed_above_them() -> None:
    package = Path(bench.__file__).parent
    assert sorted(p.stem for p in package.glob("*.py")) == sorted([*MODULES, "__init__"])
    for i, name in enumerate(MODULES):
        tree = ast.parse((package / f"{name}.py").read_text(encoding="utf-8"))
        siblings = {node.module for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.level == 1}
        assert None not in siblings, f"{name} imports the package itself"
        assert siblings <= set(MODULES[:i]), f"{name} imports {siblings - set(MODULES[:i])}"


# ------------------------------------------------------------------------ counting namespace


def test_counting_namespace_counts_a_known_sequence() -> None:
    ns = CountingNamespace(array_api_compat.numpy)
    a_host, b_host = np.arange(4.0).reshape(2, 2), 2.0 * np.eye(2)
    a, b, c = ns.wrap(a_host), ns.wrap(b_host), ns.wrap(np.ones((2, 2)))
    assert ns.calls == 0  # wrapping is free

    total = ns.sum(a @ b + c)

    assert ns.calls == 3
    assert ns.counts == {"__matmul__": 1, "__add__": 1, "sum": 1}
    assert ns.unwrap(total) == np.sum(a_host @ b_host + 1.0)
    ns.reset()
    assert ns.calls == 0


def test_counted_arrays_resolve_to_the_counting_namespace_and_look_like_numpy() -> None:
    ns = CountingNamespace(array_api_compat.numpy)
    x = ns.wrap(np.zeros((3, 2), dtype=np.float32))
    assert array_api_compat.array_namespace(x) is ns
    assert isinstance(x, np.ndarray)  # same isinstance branches as the real array
    assert array_api_compat.is_numpy_namespace(ns)  # same name-based branches too
    assert (x.shape, x.dtype, x.ndim, x.size, x.device) == ((3, 2), np.float32, 2, 6, "cpu")
    assert ns.float32 is np.float32
    assert ns.calls == 0  # metadata, dtypes and constants are free


def test_every_kind_of_array_operation_counts_once() -> None:
    ns = CountingNamespace(np)
    host = np.arange(6.0).reshape(2, 3)
    x = ns.wrap(host.copy())
    same = x
    x += 1.0  # in place: the same proxy, the wrapped array updated
    assert x is same
    np.testing.assert_array_equal(ns.unwrap(x), host + 1.0)
    y = 2.0 * x  # reflected operator
    z = np.ones((2, 3)) + y  # NumPy on the left: counted through __array_ufunc__
    row = z[0]
    z[1] = row
    flipped = z.T
    mask = z > 3.0
    value = float(ns.unwrap(ns.sum(flipped)))  # unwrap: free
    scalar = float(ns.max(z))  # float() of a counted array counts
    assert ns.counts == {
        "__iadd__": 1, "__rmul__": 1, "np.add": 1, "__getitem__": 1, "__setitem__": 1, "T": 1,
        "__gt__": 1, "sum": 1, "max": 1, "__float__": 1,
    }
    expected = np.ones((2, 3)) + 2.0 * (host + 1.0)
    expected[1] = expected[0]
    assert value == expected.sum()
    assert scalar == expected.max()
    np.testing.assert_array_equal(ns.unwrap(mask), expected > 3.0)


def test_native_numpy_calls_and_ufunc_methods_are_counted() -> None:
    ns = CountingNamespace(np)
    a, b = ns.wrap(np.ones((2, 3))), ns.wrap(np.full((3, 4), 2.0))
    out = ns.wrap(np.empty((2, 4)))
    assert np.matmul(a, b, out=out) is out  # written into the proxy's array: the proxy returned
    np.testing.assert_array_equal(ns.unwrap(out), np.full((2, 4), 6.0))
    column = np.add.reduce(out, axis=0)  # a library's native fast path
    total = ns.add.reduce(column)  # a ufunc method through the namespace
    assert ns.unwrap(total) == 48.0
    assert np.sum(a) is not None  # __array_function__
    assert ns.counts == {"np.matmul": 1, "np.add.reduce": 1, "add.reduce": 1, "np.sum": 1}


def nnbackend_step(model: nb.Sequential, opt: nb.Optimizer, x: np.ndarray,
                   labels: np.ndarray, *, update: bool = True) -> float:
    opt.zero_grad()
    logits, backprop = model.forward(x)
    loss, dlogits = nb.CrossEntropyLoss()(logits, labels)
    backprop(dlogits)
    if update:
        opt.step()
    return float(loss)


def test_counting_does_not_change_what_nnbackend_computes() -> None:
    spec = bench.SIZES["tiny"]
    x_host, labels_host = bench.make_data(spec, seed=3)
    losses, weights = [], []
    for counted in (False, True):
        model = bench.build_model(spec, "numpy", seed=3)
        x: Any = x_host
        labels: Any = labels_host
        ns = CountingNamespace(array_api_compat.numpy)
        if counted:
            for p in model.parameters():
                p.data = ns.wrap(p.data)
            x, labels = ns.wrap(x_host), ns.wrap(labels_host)
        opt = nb.Adam(model.parameters(), lr=0.01)
        for _ in range(3):
            loss = nnbackend_step(model, opt, x, labels)
        losses.append(loss)
        weights.append([np.array(ns.unwrap(p.data)) for p in model.parameters()])
        assert ns.calls > 0 if counted else ns.calls == 0
    assert losses[0] == losses[1]
    for plain, counted_w in zip(*weights, strict=True):
        np.testing.assert_array_equal(plain, counted_w)


def test_count_calls_of_a_forward_pass_match_the_calls_worked_out_by_hand() -> None:
    spec = bench.SIZES["tiny"]  # 8 → 16 → 4: two Linear layers, one ReLU between them
    # floor, per layer: W.T, matmul(a, W.T, out=z), z += b; on the hidden layer
    # maximum(z, 0.0, out=z) (its buffers exist after the warm-up steps)
    floor = bench.count_calls(bench.get_target("floor"), spec, "forward")
    assert floor == bench.CallCount(7, {"T": 2, "matmul": 2, "__iadd__": 2, "maximum": 1},
                                    "numpy")
    # nnbackend, model(x): Linear is x @ W.T then += b, ReLU NumPy's maximum against zeros (a
    # native fast path); the input check reads metadata only (the dtype's kind is cached by the
    # warm-up steps)
    library = bench.count_calls(bench.get_target("nnbackend-numpy"), spec, "forward")
    assert library == bench.CallCount(
        7, {"T": 2, "__matmul__": 2, "__iadd__": 2, "np.maximum": 1}, "array-api")


def test_count_calls_gives_nnbackend_on_cupy_no_count_without_running_it() -> None:
    # a CuPy target built by hand: count_calls must answer before it needs a device
    target = bench.Target("nnbackend-cupy", "nnbackend", "cupy", "cuda:0")
    assert bench.count_calls(target, bench.SIZES["tiny"], "train-sgd") is None


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
def test_count_calls_on_torch_counts_aten_operators_of_the_whole_step() -> None:
    count = bench.count_calls(bench.get_target("torch-cpu"), bench.SIZES["tiny"], "train-sgd")
    assert count is not None
    assert count.unit == "aten"
    # forward: one addmm per Linear; backward (autograd is counted): ∂L/∂W of both layers and
    # ∂L/∂a of the second, not ∂L/∂x of the first (x requires no grad)
    assert count.by_name["aten.addmm.default"] == 2
    assert count.by_name["aten.mm.default"] == 3


# ------------------------------------------------------------------------ the NumPy floor


def float64_setup(
    widths: tuple[int, ...] = (8, 16, 12, 4), batch: int = 6
) -> tuple[nb.Sequential, np.ndarray, np.ndarray]:
    spec = bench.MLPSpec("test", widths, batch)
    model = bench.build_model(spec, "numpy", seed=11, dtype="float64")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((batch, widths[0]))
    labels = np.array([0, 3, 1, 3, 2, 0], dtype=np.int64)[:batch]
    return model, x, labels


def test_floor_forward_loss_and_gradients_match_nnbackend_in_float64() -> None:
    model, x, labels = float64_setup()
    floor = NumpyMLP(bench.host_parameters(model))
    np.testing.assert_allclose(floor.forward(x), model(x), rtol=1e-13, atol=1e-15)

    loss = floor.loss_and_grad(x, labels)
    expected = nnbackend_step(model, nb.SGD(model.parameters(), lr=0.1), x, labels,
                              update=False)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-13)
    grads = [g for pair in zip(floor.weight_grads, floor.bias_grads, strict=True) for g in pair]
    for p, g in zip(model.parameters(), grads, strict=True):
        assert p.grad is not None
        np.testing.assert_allclose(g, p.grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_floor_training_steps_match_nnbackend_in_float64(optimizer: str) -> None:
    model, x, labels = float64_setup()
    lr = 0.05
    floor = NumpyMLP(bench.host_parameters(model), optimizer=optimizer, lr=lr)
    before = [np.array(p.data) for p in model.parameters()]
    opt = nb.SGD(model.parameters(), lr=lr) if optimizer == "sgd" else nb.Adam(
        model.parameters(), lr=lr)
    for step in range(3):  # Adam: the bias corrections change with t
        floor_loss = floor.train_step(x, labels)
        loss = nnbackend_step(model, opt, x, labels)
        np.testing.assert_allclose(float(floor_loss), loss, rtol=1e-12, err_msg=f"step {step}")
    floor_params = [a for pair in zip(floor.weights, floor.biases, strict=True) for a in pair]
    for p, mine, start in zip(model.parameters(), floor_params, before, strict=True):
        # compare the updates themselves, not only the (much larger) parameters
        np.testing.assert_allclose(mine - start, np.asarray(p.data) - start,
                                   rtol=1e-9, atol=1e-15)


def test_floor_handles_several_batch_sizes_and_float32() -> None:
    spec = bench.SIZES["tiny"]
    model = bench.build_model(spec, "numpy", seed=0)
    floor = NumpyMLP(bench.host_parameters(model))
    for batch in (4, 1, 7):
        x, _ = bench.make_data(spec, batch)
        logits = floor.forward(x)
        assert logits.shape == (batch, 4)
        assert logits.dtype == np.float32
        np.testing.assert_allclose(logits, model(x), rtol=1e-5, atol=1e-6)


def test_floor_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="optimizer must be 'sgd' or 'adam', got 'rmsprop'"):
        NumpyMLP([(np.zeros((2, 3)), np.zeros(2))], optimizer="rmsprop")
    with pytest.raises(ValueError, match=r"lr must be positive, got 0\.0"):
        NumpyMLP([(np.zeros((2, 3)), np.zeros(2))], lr=0.0)
    with pytest.raises(ValueError, match=r"layer 0 has W \(2, 3\) float64 and b \(3,\)"):
        NumpyMLP([(np.zeros((2, 3)), np.zeros(3))])


# ------------------------------------------------------------------------ sizes, timer, products


def test_flops_follow_the_documented_convention() -> None:
    small = bench.SIZES["small"]
    macs = 64 * 128 + 128 * 10
    assert small.flops("forward") == 2 * 32 * macs
    for workload in ("fwd-bwd", "train-sgd", "train-adam"):
        assert small.flops(workload) == 6 * 32 * macs
    assert small.flops("forward", batch=7) == 2 * 7 * macs
    assert bench.SIZES["large"].label == "784-1024-1024-10"
    with pytest.raises(ValueError, match="unknown workload 'backward'"):
        small.flops("backward")


def test_measure_runs_the_step_and_synchronises_each_block() -> None:
    calls = {"step": 0, "sync": 0}

    def step() -> None:
        calls["step"] += 1

    def sync() -> None:
        calls["sync"] += 1

    timing = bench.measure(step, sync=sync, budget_s=0.002, repeats=3)
    assert timing.seconds > 0 and timing.median_seconds >= timing.seconds
    assert calls["step"] >= timing.steps + 2  # warm-up included
    assert calls["sync"] >= 1 + 3  # after the warm-up, and once per block at least
    with pytest.raises(ValueError, match="budget_s must be positive"):
        bench.measure(step, budget_s=0.0)


def test_measure_interleaved_takes_turns() -> None:
    order: list[str] = []
    syncs = {"a": 0, "b": 0}

    def step(name: str) -> Any:
        return lambda: order.append(name)

    def sync(name: str) -> Any:
        return lambda: syncs.__setitem__(name, syncs[name] + 1)

    timings = bench.measure_interleaved([(step("a"), sync("a")), (step("b"), sync("b"))],
                                        budget_s=0.006, rounds=3, repeats=2)
    assert len(timings) == 2
    for t in timings:
        assert t.seconds > 0 and t.steps >= 3 * 2  # every round times at least a block each
    # one turn of a, one of b, per round: runs of one name alternate, three of each
    runs = [name for name, _ in itertools.groupby(order)]
    assert runs == ["a", "b"] * 3
    assert min(syncs.values()) >= 3 * (1 + 2)  # per round: after the warm-up, per block
    assert sum(1 for name in order if name == "a") >= timings[0].steps
    with pytest.raises(ValueError, match="needs steps, a positive budget_s"):
        bench.measure_interleaved([], budget_s=1.0)


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
def test_build_torch_model_starts_from_nnbackends_weights() -> None:
    torch = importlib.import_module("torch")
    spec = bench.MLPSpec("test", (8, 16, 12, 4), 5)
    model = bench.build_model(spec, "numpy", seed=7)
    torch_model = bench.build_torch_model(spec, seed=7)
    linears = [m for m in torch_model if isinstance(m, torch.nn.Linear)]
    for (W, b), linear in zip(bench.host_parameters(model), linears, strict=True):
        np.testing.assert_array_equal(linear.weight.detach().numpy(), W)
        np.testing.assert_array_equal(linear.bias.detach().numpy(), b)
    assert [type(m).__name__ for m in torch_model] == ["Linear", "ReLU"] * 2 + ["Linear"]
    x, _ = bench.make_data(spec, seed=1)
    with torch.no_grad():
        logits = torch_model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(logits, model(x), rtol=1e-5, atol=1e-6)


class RecordingNumpy:
    """NumPy with a ``matmul`` that records its operands' shapes before delegating."""

    def __init__(self) -> None:
        self.shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    def matmul(self, a: np.ndarray, b: np.ndarray, **kwargs: Any) -> Any:
        self.shapes.append((a.shape, b.shape))
        return np.matmul(a, b, **kwargs)


@pytest.mark.parametrize("workload", bench.WORKLOADS)
def test_gemm_workload_multiplies_the_steps_shapes(workload: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    spec = bench.SIZES["tiny"]
    recorder = RecordingNumpy()
    monkeypatch.setattr("nnbackend.bench.workloads.np", recorder)
    products = bench.gemm_workload(bench.get_target("floor"), spec, workload)
    assert recorder.shapes == []  # building multiplies nothing
    products()
    flops = 0
    for (m, k), (k_right, n) in recorder.shapes:
        assert k == k_right
        flops += 2 * m * k * n
    B, (n0, n1, _) = spec.batch, spec.widths
    # every product of the step but the first layer's ∂L/∂x, which no target computes
    expected = spec.flops(workload) - (0 if workload == "forward" else 2 * B * n0 * n1)
    assert flops == expected


def test_gemm_times_measures_once_per_library_device_size_and_direction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    measured: list[float] = []

    def fake_measure(step: Any, *, sync: Any, budget_s: float) -> bench.Timing:
        step()
        sync()
        measured.append(budget_s)
        return bench.Timing(0.5 * len(measured), 0.0, 1)

    monkeypatch.setattr("nnbackend.bench.report.measure", fake_measure)
    times = bench.GemmTimes(budget_s=0.01)
    floor, library = bench.get_target("floor"), bench.get_target("nnbackend-numpy")
    tiny, small = bench.SIZES["tiny"], bench.SIZES["small"]
    assert times.seconds(floor, tiny, "train-sgd") == 0.5
    assert times.seconds(library, tiny, "train-adam") == 0.5  # NumPy on the CPU, backward
    assert times.seconds(library, tiny, "fwd-bwd") == 0.5
    assert times.seconds(floor, tiny, "forward") == 1.0  # no backward: other products
    assert times.seconds(floor, small, "train-sgd") == 1.5  # another size
    assert measured == [0.01, 0.01, 0.01]


def test_make_row_derives_the_rates_and_extra_info_adds_only_the_threads() -> None:
    spec = bench.SIZES["tiny"]
    calls = bench.CallCount(3, {"T": 1, "maximum": 2}, "numpy")
    row = bench.make_row(bench.get_target("floor"), spec, "forward", batch=None,
                         seconds=1e-3, gemm_seconds=2.5e-4, calls=calls)
    assert row.samples_per_s == pytest.approx(spec.batch / 1e-3)
    assert row.gflops == pytest.approx(2 * spec.batch * (8 * 16 + 16 * 4) / 1e-3 / 1e9)
    assert row.gemm_fraction == pytest.approx(0.25)
    assert (row.array_calls, row.calls_unit, row.calls_by_name) == (3, "numpy", calls.by_name)
    info = row.extra_info()
    assert info.pop("threads") == bench.thread_info()
    assert info == dataclasses.asdict(row)


# ------------------------------------------------------------------------ run_cli


def run_tiny(backends: Any, json_path: Path | None = None, *, plot_path: Path | None = None,
             **kwargs: Any) -> tuple[int, str]:
    out = io.StringIO()
    rc = bench.run_cli(backends, "tiny", json_path, plot_path, budget_s=0.002, stream=out,
                       **kwargs)
    return rc, out.getvalue()


def test_run_cli_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    rc, text = run_tiny(["numpy"], path)
    assert rc == 0
    assert "µs/step" in text and "samples/s" in text and "GEMM%" in text
    table_rows = [line for line in text.splitlines() if line.startswith("tiny ")]
    assert len(table_rows) == 2 * len(bench.WORKLOADS)  # the floor always runs
    assert f"wrote JSON: {path}" in text

    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["machine"]["numpy"] == np.__version__
    assert "OPENBLAS_CORETYPE" in document["machine"]["env"]
    rows = document["rows"]
    assert {(r["workload"], r["target"]) for r in rows} == {
        (w, t) for w in bench.WORKLOADS for t in ("floor", "nnbackend-numpy")}
    spec = bench.SIZES["tiny"]
    for r in rows:
        assert r["size"] == "tiny" and r["batch"] == spec.batch and r["widths"] == "8-16-4"
        assert r["samples_per_s"] == pytest.approx(spec.batch / r["seconds"])
        assert r["gflops"] == pytest.approx(spec.flops(r["workload"]) / r["seconds"] / 1e9)
        assert r["gemm_fraction"] == pytest.approx(r["gemm_seconds"] / r["seconds"])
        assert r["array_calls"] == sum(r["calls_by_name"].values()) > 0
        assert r["vs_torch"] is None  # torch was not asked for
        if r["target"] == "floor":
            assert r["vs_floor"] == 1.0 and r["calls_unit"] == "numpy"
        else:
            assert r["calls_unit"] == "array-api"


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
def test_run_cli_takes_the_commands_comma_separated_string() -> None:
    rc, text = run_tiny(" numpy , torch", workloads=["train-sgd"])
    assert rc == 0
    targets = {line.split()[2] for line in text.splitlines() if line.startswith("tiny ")}
    assert targets >= {"floor", "torch-cpu", "nnbackend-numpy"}
    torch_line = next(line for line in text.splitlines() if " torch-cpu " in line)
    assert "1.00×" in torch_line and torch_line.endswith("*")  # its own ratio; ATen count


@pytest.mark.parametrize(
    ("backends", "sizes", "message"),
    [
        ("numpy,tensorflow", "tiny", "unknown backend 'tensorflow' in --backends; choose from "
                                     "numpy, cupy, torch, gpulike, numpy-handwritten, "
                                     "nnbackend-torch, jax, nnbackend-jax-jit, "
                                     "jax-jit-handwritten, nnbackend-cupy-graph, all"),
        ("numpy", "small,huge", "unknown size 'huge' in --sizes; choose from small, medium, "
                                "large, lenet, resblock"),
        ("", "small", "--backends names no backend"),
        ("numpy", " , ", "--sizes names no size"),
    ],
)
def test_run_cli_rejects_unknown_names_before_measuring(backends: str, sizes: str,
                                                        message: str) -> None:
    out = io.StringIO()
    with pytest.raises(ValueError, match=re.escape(message)):
        bench.run_cli(backends, sizes, None, None, stream=out)
    assert out.getvalue() == ""


def test_run_cli_rejects_an_unknown_workload() -> None:
    with pytest.raises(ValueError, match="unknown workload 'predict'"):
        bench.run_cli("numpy", "tiny", None, None, workloads=["predict"], stream=io.StringIO())


@pytest.mark.skipif(cupy_usable(), reason="a CUDA device is usable here")
def test_run_cli_lists_an_unavailable_backend_with_its_reason() -> None:
    rc, text = run_tiny("cupy", workloads=["forward"])
    assert rc == 1  # nothing that was asked for could run
    assert "unavailable: nnbackend-cupy: " in text
    assert "none of the requested backends is available here" in text
    with pytest.raises(nb.BackendUnavailableError):
        bench.get_target("nnbackend-cupy")


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed")
def test_run_cli_plots_throughput_against_batch_size(tmp_path: Path) -> None:
    png, path = tmp_path / "throughput.png", tmp_path / "bench.json"
    rc, text = run_tiny("numpy", path, plot_path=png, workloads=["forward"],
                        plot_batches=(2, 8))
    assert rc == 0
    assert f"wrote plot: {png}" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    points = json.loads(path.read_text(encoding="utf-8"))["throughput_vs_batch"]
    assert {(p["target"], p["batch"]) for p in points} == {
        (t, b) for t in ("floor", "nnbackend-numpy") for b in (2, 8)}
    assert all(p["samples_per_s"] > 0 for p in points)


def test_run_cli_without_matplotlib_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    out = io.StringIO()
    with pytest.raises(ImportError, match=r"pip install 'nnbackend\[plot\]'"):
        bench.run_cli("numpy", "tiny", None, tmp_path / "plot.png", stream=out)
    assert out.getvalue() == ""  # refused before measuring anything


def test_the_gpulike_target_runs_cupys_paths_and_is_not_counted() -> None:
    target = bench.get_target("nnbackend-gpulike")
    assert (target.impl, target.backend, target.library) == ("nnbackend", "gpulike", "gpulike")
    spec = bench.SIZES["tiny"]
    for workload in ("forward", "train-adam"):
        bench.build_workload(target, spec, workload)()
    bench.gemm_workload(target, spec, "train-sgd")()
    # CuPy's own functions take no counting proxies; the GPU-like device takes CuPy's paths
    assert bench.count_calls(target, spec, "train-sgd") is None


# ------------------------------------------------------------------------ convolutional networks

CONV_TINY = ("lenet-tiny", "resblock-tiny")


def conv_target(name: str) -> bench.Target:
    """The target ``name``, or a skip naming why it cannot run here (a missing library or a
    layer nnbackend does not have yet)."""
    try:
        target = bench.get_target(name)
        if target.impl == "jax":
            pytest.skip(f"{name}: the hand-written jax.jit step is written for the MLPs only")
        if target.impl == "nnbackend":
            bench.build_conv_model(bench.CONV_SIZES["resblock-tiny"], target.backend)
            bench.build_conv_model(bench.CONV_SIZES["lenet-tiny"], target.backend)
    except nb.BackendUnavailableError as exc:
        pytest.skip(f"{name}: {exc}")
    return target


def test_conv_flops_follow_the_closed_form() -> None:
    lenet = bench.CONV_SIZES["lenet"]
    n = 64
    conv1, conv2 = 2 * n * 28 * 28 * 6 * 1 * 25, 2 * n * 10 * 10 * 16 * 6 * 25
    linear = 2 * n * (400 * 120 + 120 * 84 + 84 * 10)
    assert lenet.flops("forward") == conv1 + conv2 + linear
    # backward: ∂L/∂W of every layer, ∂L/∂x of every layer but the first convolution
    for workload in ("fwd-bwd", "train-adam"):
        assert lenet.flops(workload) == 3 * (conv1 + conv2 + linear) - conv1
    assert lenet.flops("forward", batch=2) == (conv1 + conv2 + linear) / 32
    block = bench.CONV_SIZES["resblock"]
    one = 2 * 32 * 32 * 32 * 16 * 16 * 9
    assert block.flops("forward") == 2 * one
    assert block.flops("train-adam") == 6 * one  # ∂L/∂x of both: the block is inside a net
    assert block.flops_by_layer("fwd-bwd") == {"conv1": (one, one, one), "conv2": (one, one, one)}
    assert (lenet.label, block.label) == ("28x28x1", "32x32x16")
    with pytest.raises(ValueError, match="unknown workload 'backward'"):
        block.flops("backward")


def test_conv_parameters_are_pytorchs_state_dict() -> None:
    torch = pytest.importorskip("torch")
    for name in CONV_TINY:
        spec = bench.CONV_SIZES[name]
        model = bench.build_torch_conv_model(spec, seed=3)
        state = bench.conv_parameters(spec, seed=3)
        theirs = model.state_dict()
        assert sorted(state) == sorted(theirs)
        for key, value in state.items():
            np.testing.assert_array_equal(theirs[key].numpy(), value)
        assert isinstance(model, torch.nn.Module)
    w = bench.conv_parameters(bench.CONV_SIZES["lenet"], seed=0)["4.weight"]
    assert w.shape == (16, 6, 5, 5) and w.dtype == np.float32
    assert abs(float(w.std()) - (2 / 150) ** 0.5) < 0.01  # He: N(0, 2 / fan_in)


def torch_float64_reference(spec: bench.ConvSpec, state: dict[str, np.ndarray], x: np.ndarray,
                            aim: np.ndarray) -> tuple[Any, dict[str, np.ndarray], np.ndarray]:
    """PyTorch autograd in float64 on the same state (dropout off): (output, gradients, ∂L/∂x
    or the loss)."""
    torch = pytest.importorskip("torch")
    model = bench.build_torch_conv_model(spec).double()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    xt = torch.from_numpy(x).requires_grad_(spec.input_grad)
    y = model(xt)
    if spec.kind == "lenet":
        loss = torch.nn.functional.cross_entropy(y, torch.from_numpy(aim))
        loss.backward()
        last = loss.detach().numpy()
    else:
        y.backward(torch.from_numpy(aim))
        last = xt.grad.numpy()
    grads = {k: p.grad.numpy() for k, p in model.named_parameters()}
    return y.detach().numpy(), grads, last


def float64_state(spec: bench.ConvSpec) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float64) if v.dtype == np.float32 else v
            for k, v in bench.conv_parameters(spec, seed=1).items()}


def assert_gradients_match(mine: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
    assert sorted(mine) == sorted(reference)
    for key, expected in reference.items():
        # a convolution's bias before a batch norm has a gradient of rounding noise only
        atol = 1e-12 * max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(mine[key], expected, rtol=1e-9, atol=atol, err_msg=key)


def test_floor_lenet_matches_pytorch_autograd_in_float64() -> None:
    spec = bench.CONV_SIZES["lenet-tiny"]
    state = float64_state(spec)
    x, labels = bench.make_conv_data(spec, seed=2)
    x = x.astype(np.float64)
    _, grads, loss = torch_float64_reference(spec, state, x, labels)
    floor = bench.NumpyLeNet(spec, state, dropout_p=0.0)
    mine = floor.loss_and_grad(floor.prepare(x), labels)
    np.testing.assert_allclose(float(mine), float(loss), rtol=1e-12)
    assert_gradients_match(floor.gradients(), grads)
    # the running statistics after one training forward, and inference with them
    torch = pytest.importorskip("torch")
    model = bench.build_torch_conv_model(spec).double()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    model(torch.from_numpy(x))
    after = floor.state_dict()
    for key, value in model.state_dict().items():
        if "running" in key:
            np.testing.assert_allclose(after[key], value.numpy(), rtol=1e-12, err_msg=key)
    model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(floor.forward(floor.prepare(x)), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dx_mode", ["flip", "col2im"])
def test_floor_resblock_matches_pytorch_autograd_in_float64(dx_mode: str) -> None:
    spec = bench.CONV_SIZES["resblock-tiny"]
    state = float64_state(spec)
    x, g = (a.astype(np.float64) for a in bench.make_conv_data(spec, seed=2))
    y, grads, dx = torch_float64_reference(spec, state, x, g)
    floor = bench.NumpyResBlock(spec, state, dx_mode=dx_mode)
    mine = floor.forward_backward(floor.prepare(x), floor.prepare(g))
    np.testing.assert_allclose(mine.transpose(0, 3, 1, 2), dx, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(floor.y.transpose(0, 3, 1, 2), y, rtol=1e-10, atol=1e-13)
    assert_gradients_match(floor.gradients(), grads)


def test_floor_adam_steps_follow_torch_optim_adam() -> None:
    torch = pytest.importorskip("torch")
    spec = bench.CONV_SIZES["resblock-tiny"]
    state = float64_state(spec)
    x, g = (a.astype(np.float64) for a in bench.make_conv_data(spec, seed=2))
    model = bench.build_torch_conv_model(spec).double()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    floor = bench.NumpyResBlock(spec, state, lr=0.01)
    for _ in range(3):  # the bias corrections change with t
        opt.zero_grad()
        model(torch.from_numpy(x)).backward(torch.from_numpy(g))
        opt.step()
        floor.train_step(floor.prepare(x), floor.prepare(g))
    mine = floor.state_dict()
    for key, value in model.state_dict().items():
        if key in mine:
            start = state[key]
            np.testing.assert_allclose(mine[key] - start, value.numpy() - start, rtol=1e-8,
                                       atol=1e-14, err_msg=key)


def test_floor_rejects_the_other_network_and_a_missing_weight() -> None:
    lenet, block = bench.CONV_SIZES["lenet-tiny"], bench.CONV_SIZES["resblock-tiny"]
    with pytest.raises(ValueError, match="NumpyLeNet: needs a lenet spec, got 'resblock-tiny'"):
        bench.NumpyLeNet(block, bench.conv_parameters(block))
    state = bench.conv_parameters(block)
    del state["0.block.3.weight"]
    with pytest.raises(KeyError, match=r"NumpyResBlock: the state has no 0\.block\.3\.weight"):
        bench.NumpyResBlock(block, state)
    with pytest.raises(ValueError, match="NumpyResBlock: needs a resblock spec"):
        bench.NumpyResBlock(lenet, bench.conv_parameters(lenet))


@pytest.mark.parametrize("size", CONV_TINY)
def test_the_floors_products_are_the_counted_flops(size: str) -> None:
    spec = bench.CONV_SIZES[size]
    for workload in spec.workloads:
        timer = bench.MatmulTimer()
        step = bench.build_conv_workload(bench.get_target("floor"), spec, workload,
                                         matmul=timer)
        step()
        flops = 0
        for a, b in timer.shapes:  # (..., m, k) · (..., k, n), the batch axes broadcast
            m, k, n = (a[-2] if len(a) > 1 else 1), a[-1], b[-1]
            assert k == (b[-2] if len(b) > 1 else b[0])
            flops += 2 * math.prod(np.broadcast_shapes(a[:-2], b[:-2])) * m * k * n
        assert flops == spec.flops(workload), workload
        assert timer.seconds > 0.0


@pytest.mark.parametrize("target_name", bench.TARGETS)
@pytest.mark.parametrize("size", CONV_TINY)
def test_conv_workloads_run_on_every_target(size: str, target_name: str) -> None:
    if target_name == "nnbackend-jax" and size == "lenet-tiny":
        # JAX compiles every operation of a new shape on first use: ~15 s for LeNet's three
        # steps; its layers are tested on the JAX row of their own tests, the block here
        pytest.skip("LeNet on JAX: compile time; the residual block runs on JAX")
    target = conv_target(target_name)
    spec = bench.CONV_SIZES[size]
    # JAX: the training step only (its forward and backward are the next test's, compiled)
    workloads = ("train-adam",) if target.backend == "jax" else spec.workloads
    for workload in workloads:
        step = bench.build_conv_workload(target, spec, workload)
        out = step()
        out = step()  # twice: the optimizer's state exists after the first
        assert out is not None
        host = nb.to_numpy(out) if target.impl == "nnbackend" else np.asarray(
            out.detach().cpu() if hasattr(out, "detach") else out)
        if workload == "forward" and spec.kind == "lenet":
            assert host.shape == (spec.batch, 10)
        elif spec.kind == "lenet" or target.compiled:
            assert host.shape == ()  # the loss (the block's compiled step: Σ y ⊙ g)
        else:  # the block's output (N, C, H, W) or ∂L/∂x, in the target's own layout
            assert sorted(host.shape) == sorted(spec.input_shape())
        assert np.all(np.isfinite(host))


@pytest.mark.parametrize("target_name", [t for t in bench.TARGETS if t != "floor"])
def test_every_target_computes_the_floors_block(target_name: str) -> None:
    """The same math everywhere: the block's inference output and one ∂L/∂x (no dropout in the
    block, so no randomness) agree with the floor to float32 rounding."""
    target = conv_target(target_name)
    if target.compiled:
        pytest.skip(f"{target_name} runs training steps only (its loss is tested below)")
    spec = bench.CONV_SIZES["resblock-tiny"]
    floor = bench.get_target("floor")
    for workload in ("forward", "fwd-bwd"):
        expected = bench.build_conv_workload(floor, spec, workload)().transpose(0, 3, 1, 2)
        out: Any = bench.build_conv_workload(target, spec, workload)()
        got = nb.to_numpy(out) if target.impl == "nnbackend" else out.detach().cpu().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, err_msg=workload)


def test_conv_gemm_share_per_implementation() -> None:
    spec = bench.CONV_SIZES["resblock-tiny"]
    floor = bench.conv_gemm_share(bench.get_target("floor"), spec, "fwd-bwd", steps=1)
    assert floor is not None and 0.0 < floor < 1.0  # a share of the same step's time
    if HAS_TORCH:
        torch_s = bench.conv_gemm_share(bench.get_target("torch-cpu"), spec, "train-adam",
                                        steps=1)
        assert torch_s is not None and torch_s > 0.0
    target = bench.Target("nnbackend-cupy", "nnbackend", "cupy", "cuda:0")
    assert bench.conv_gemm_share(target, spec, "forward") is None  # asynchronous: not timed


def test_blas_core_share_is_one_outside_the_parallel_parts_and_one_over_k_inside() -> None:
    """Inside nnbackend's parallel parts each product runs on one of k BLAS threads: it counts
    1/k of its seconds, so products side by side on the parts' threads add up to wall time."""
    from nnbackend._native import run_parts

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        share = bench.blas_core_share()
        seen: list[float] = []
        run_parts(lambda lo, hi, part: seen.append(share()), 2, 2)
        assert share() == 1.0
    assert seen == [0.5, 0.5]


def test_counting_namespace_weighs_each_timed_call() -> None:
    """``weight`` scales every timed call's seconds (sub-namespaces' included), outside the
    timing: a weight of 0 leaves the counts and zero seconds."""
    ns = CountingNamespace(array_api_compat.numpy, timed=("matmul", "linalg.matrix_norm"),
                           weight=lambda: 0.0)
    a = ns.wrap(np.ones((3, 3)))
    ns.matmul(a, a)
    ns.linalg.matrix_norm(a)
    assert ns.counts == {"matmul": 1, "linalg.matrix_norm": 1}
    assert ns.seconds == {"matmul": 0.0, "linalg.matrix_norm": 0.0}


def test_nnbackend_conv_gemm_share_weighs_the_parallel_parts() -> None:
    """The residual block's convolutions run their column blocks on two threads: their
    products' seconds are weighted by :func:`blas_core_share` (summed unweighted, two parts
    multiplying at once would count twice their wall time)."""
    spec = bench.CONV_SIZES["resblock"]  # the size whose columns are rebuilt (in parts)
    target = bench.get_target("nnbackend-numpy")
    calls: list[float] = []
    real = bench.convworkloads.blas_core_share

    def recording() -> Any:
        share = real()

        def weight() -> float:
            calls.append(share())
            return calls[-1]
        return weight

    with threadpoolctl.threadpool_limits(2, user_api="blas"), pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench.convworkloads, "blas_core_share", recording)
        share = bench.conv_gemm_share(target, spec, "train-adam", steps=1)
    assert share is not None and 0.0 < share < 1.0
    assert 0.5 in calls and 1.0 in calls  # products in the parts, and outside them


def test_timing_counting_namespace_times_only_the_named_calls() -> None:
    ns = CountingNamespace(array_api_compat.numpy, timed=("matmul", "__matmul__"))
    a = ns.wrap(np.ones((3, 3)))
    b = ns.matmul(a, a) + a @ a
    assert ns.unwrap(ns.sum(b)) == 54.0
    assert set(ns.seconds) == {"matmul", "__matmul__"}
    assert all(s > 0.0 for s in ns.seconds.values())
    assert ns.counts == {"matmul": 1, "__matmul__": 1, "__add__": 1, "sum": 1}
    ns.reset()
    assert ns.seconds == {} and ns.calls == 0


def test_peak_rss_growth_runs_in_a_fresh_process() -> None:
    result = bench.peak_rss_growth("floor", "resblock-tiny", "train-adam", steps=2)
    assert (result.target, result.size, result.workload, result.steps) == (
        "floor", "resblock-tiny", "train-adam", 2)
    assert result.growth_bytes >= 0 and result.baseline_bytes > 10 * 2**20  # Python + NumPy
    assert result.reset == Path("/proc/self/clear_refs").exists()
    with pytest.raises(RuntimeError, match="measuring nowhere resblock-tiny forward failed"):
        bench.peak_rss_growth("nowhere", "resblock-tiny", "forward")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_peak_rss_growth_is_not_the_parents_peak() -> None:
    """ru_maxrss carries the parent's peak across fork and exec: a parent larger than what the
    child's steps need made every growth read 0 (the child's own peak, VmHWM, is measured)."""
    ballast = np.ones(48 * 2**20 // 8)  # 48 MiB resident here, more than the child will hold
    result = bench.peak_rss_growth("floor", "lenet-tiny", "train-adam", steps=2)
    assert result.growth_bytes > 0
    assert result.baseline_bytes < ballast.nbytes + 200 * 2**20


def test_run_cli_measures_the_convolutional_networks(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    out = io.StringIO()
    rc = bench.run_cli("numpy", ["lenet-tiny", "resblock-tiny"], path, None, budget_s=0.002,
                       memory=False, stream=out)
    text = out.getvalue()
    assert "convolutional networks" in text and "peak MiB" in text
    rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
    targets = {r["target"] for r in rows}
    if "nnbackend-numpy" in targets:
        assert rc == 0
    else:  # nnbackend lacks a layer here: said, and nothing requested ran
        assert rc == 1 and "not measured: nnbackend-numpy lenet-tiny: " in text
    assert targets <= {"floor", "nnbackend-numpy"}
    expected = {(s, w, t) for s in CONV_TINY for w in bench.CONV_WORKLOADS for t in targets}
    assert {(r["size"], r["workload"], r["target"]) for r in rows} == expected
    for r in rows:
        spec = bench.CONV_SIZES[r["size"]]
        assert r["widths"] == spec.label and r["batch"] == 2
        assert r["gflops"] == pytest.approx(spec.flops(r["workload"]) / r["seconds"] / 1e9)
        assert r["gemm_method"] == "inline"
        assert r["gemm_fraction"] == pytest.approx(r["gemm_seconds"] / r["seconds"])
        assert r["peak_rss_bytes"] is None  # memory=False


def test_the_header_names_the_blas_kernel_and_openblas_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "1048576")
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    _, text = run_tiny("numpy", workloads=["forward"])
    header = text.splitlines()[0]
    kernel = bench.blas_kernel()
    if kernel is not None:
        assert f"kernel {kernel}" in header
    assert "OPENBLAS_L2_SIZE=1048576" in header
    assert bench.openblas_env() == {"OPENBLAS_L2_SIZE": "1048576"}
    assert "OPENBLAS_L2_SIZE" not in bench.without_openblas_env()


def test_restart_without_openblas_env_replaces_the_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr("os.execve", lambda path, argv, env: calls.append((path, argv, env)))
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    bench.restart_without_openblas_env(["bench"])
    assert calls == []  # nothing to drop
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    note = io.StringIO()
    bench.restart_without_openblas_env(["bench", "--sizes", "lenet"], stream=note)
    [(path, argv, env)] = calls
    assert argv == [sys.executable, "-m", "nnbackend", "bench", "--sizes", "lenet"]
    assert "OPENBLAS_CORETYPE" not in env and path == sys.executable
    assert "restarting without OPENBLAS_CORETYPE=Haswell" in note.getvalue()
    monkeypatch.setenv("NNBACKEND_BENCH_KEEP_OPENBLAS_ENV", "1")
    bench.restart_without_openblas_env(["bench"])
    assert len(calls) == 1


@pytest.mark.parametrize("target_name", ["nnbackend-numpy", "floor", "torch-cpu"])
def test_step_breakdown_accounts_for_the_step(target_name: str) -> None:
    if target_name == "torch-cpu" and not HAS_TORCH:
        pytest.skip("PyTorch is not installed")
    if target_name == "nnbackend-numpy":
        conv_target(target_name)
    result = bench.step_breakdown(target_name, "resblock-tiny", "train-adam", steps=2)
    names = [p.name for p in result.phases]
    assert len(names) == len(set(names))
    assert all(p.seconds >= 0.0 for p in result.phases)
    if target_name == "torch-cpu":  # operators' self times
        assert "aten::convolution_backward" in names
        return
    total = sum(p.seconds for p in result.phases)  # "other" is the rest of the step
    assert total == pytest.approx(result.seconds, rel=1e-6)
    assert names[-1] == "other"
    convs = [p for p in result.phases if "Conv2d" in p.name or p.name.startswith("conv")]
    assert len(convs) == 4  # two convolutions, forward and backward
    for p in convs:
        assert p.gemm_seconds is not None and p.gemm_seconds > 0.0
    text = bench.format_breakdown(result)
    assert text.startswith(f"{target_name}, resblock-tiny, train-adam: ")
    with pytest.raises(ValueError, match="nnbackend-gpulike is not broken down"):
        bench.step_breakdown("nnbackend-gpulike", "resblock-tiny")


@pytest.mark.parametrize("target_name", ["nnbackend-torch", "nnbackend-jax"])
def test_nnbackend_on_torch_and_jax_runs_the_mlp_steps(target_name: str) -> None:
    target = conv_target(target_name)
    spec = bench.SIZES["tiny"]
    model_losses = []
    for workload in bench.WORKLOADS:
        step = bench.build_workload(target, spec, workload)
        step()
        out = step()
        model_losses.append(nb.to_numpy(out))
    assert model_losses[0].shape == (spec.batch, 4)  # the forward's logits
    assert all(np.isfinite(loss).all() for loss in model_losses)
    products = bench.gemm_workload(target, spec, "train-sgd")
    products()  # synchronised: JAX's results waited for
    assert bench.count_calls(target, spec, "train-sgd") is None  # not counted off NumPy
