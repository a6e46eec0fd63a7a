"""The benchmark's compiled rows: nnbackend's step through ``compile_step`` (``jax.jit``, CUDA
graphs) and the hand-written ``jax.jit`` peer.

No timing is asserted: only that the rows exist with values, what they hold, and the math of the
peer against nnbackend's eager step.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend import bench
from nnbackend.cli import main

pytest.importorskip("jax")

COMPILED = ("nnbackend-jax-jit", "jax-jit-handwritten")


def cupy_usable() -> bool:
    return any(row.name == "cupy" and row.available for row in nb.available_backends())


def rows_of(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))["rows"]
    return rows


def test_the_compiled_rows_appear_with_values_and_compile_times(tmp_path: Path) -> None:
    path, out = tmp_path / "bench.json", io.StringIO()
    rc = bench.run_cli("numpy,nnbackend-jax-jit,jax-jit-handwritten", "tiny", path, None,
                       budget_s=0.002, stream=out)
    assert rc == 0
    text = out.getvalue()
    assert "compile s" in text.splitlines()[3]  # the table's header (after the two-line header
    rows = rows_of(path)                        # and a blank line)
    compiled = [r for r in rows if r["target"] in COMPILED]
    # training steps only: compile_step compiles a training step
    assert {(r["target"], r["workload"]) for r in compiled} == {
        (t, w) for t in COMPILED for w in bench.COMPILED_WORKLOADS}
    spec = bench.SIZES["tiny"]
    for r in compiled:
        assert r["seconds"] > 0 and r["samples_per_s"] == pytest.approx(spec.batch / r["seconds"])
        assert r["gflops"] == pytest.approx(spec.flops(r["workload"]) / r["seconds"] / 1e9)
        assert r["compile_seconds"] is not None and r["compile_seconds"] > 0
        assert r["array_calls"] is None  # one program call per step: not counted
        assert r["gemm_seconds"] is not None and r["gemm_seconds"] > 0
        assert (r["backend"], r["impl"]) == ("jax", "nnbackend" if r["target"].startswith(
            "nnbackend") else "jax")
        line = next(line for line in text.splitlines()
                    if line.startswith(f"tiny    {r['workload']} ") and f" {r['target']} " in line)
        assert line.split()[-2:] == [f"{r['compile_seconds']:.2f}", "—"]  # compile s, calls
    eager = [r for r in rows if r["target"] not in COMPILED]
    assert eager and all(r["compile_seconds"] is None for r in eager)
    assert all(line.split()[-2] == "—" for line in text.splitlines()
               if line.startswith("tiny ") and " nnbackend-numpy " in line)


def test_bench_command_measures_the_compiled_rows_on_the_small_mlp(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bench.json"
    rc = main(["bench", "--backends", "jax-jit-handwritten,nnbackend-jax-jit", "--sizes",
               "small", "--budget", "0.01", "--json", str(path)])
    assert rc == 0
    text = capsys.readouterr().out
    rows = rows_of(path)
    assert {(r["target"], r["workload"]) for r in rows} == {
        *((t, w) for t in COMPILED for w in bench.COMPILED_WORKLOADS),
        *(("floor", w) for w in bench.WORKLOADS)}  # the floor always runs
    for r in rows:
        assert r["size"] == "small" and r["widths"] == "64-128-10" and r["seconds"] > 0
        assert (r["compile_seconds"] > 0) if r["target"] in COMPILED else (
            r["compile_seconds"] is None)
    assert "JAX " in text.splitlines()[0] and "kernel" in text.splitlines()[0]


@pytest.mark.skipif(cupy_usable(), reason="a CUDA device is usable here")
def test_the_cupy_graph_row_is_listed_as_unavailable_with_its_reason() -> None:
    out = io.StringIO()
    rc = bench.run_cli("nnbackend-cupy-graph", "tiny", None, None, budget_s=0.002,
                       workloads=["train-sgd"], stream=out)
    assert rc == 1  # nothing that was asked for could run
    reason = next(line for line in out.getvalue().splitlines()
                  if line.startswith("unavailable: nnbackend-cupy-graph: "))
    assert len(reason) > len("unavailable: nnbackend-cupy-graph: ") + 10
    with pytest.raises(nb.BackendUnavailableError):
        bench.get_target("nnbackend-cupy-graph")


def test_the_names_are_accepted_and_all_includes_them() -> None:
    for name in (*COMPILED, "nnbackend-cupy-graph"):
        requested, _ = bench.resolve_names(name, "small")
        assert requested == [name]
    requested, _ = bench.resolve_names("all", "small")
    assert {*COMPILED, "nnbackend-cupy-graph"} <= set(requested)
    with pytest.raises(ValueError, match="unknown backend 'jax-jit' in --backends"):
        bench.resolve_names("jax-jit", "small")


def test_compiled_targets_run_training_steps_only() -> None:
    for name in COMPILED:
        target = bench.get_target(name)
        assert target.compiled
        assert bench.runs(target, "train-adam") and not bench.runs(target, "forward")
        with pytest.raises(ValueError, match=f"{name} compiles training steps only"):
            bench.build_workload(target, bench.SIZES["tiny"], "fwd-bwd")
        assert bench.count_calls(target, bench.SIZES["tiny"], "train-sgd") is None
    assert all(bench.runs(bench.get_target(t), w) for t in ("floor", "nnbackend-numpy")
               for w in bench.WORKLOADS)
    peer = bench.get_target("jax-jit-handwritten")
    with pytest.raises(nb.BackendUnavailableError, match="convolutional networks"):
        bench.build_conv_workload(peer, bench.CONV_SIZES["resblock-tiny"], "train-adam")
    with pytest.raises(nb.BackendUnavailableError, match="sequence layers"):
        bench.build_seq_workload(peer, bench.SEQ_SIZES["lstm-tiny"], "train-adam")


@pytest.mark.parametrize("workload", bench.COMPILED_WORKLOADS)
def test_the_compiled_steps_follow_nnbackends_eager_step(workload: str) -> None:
    """The peer and nnbackend's compiled step train as the eager step does: the same losses
    over five steps from the same weights and data (float32: XLA reorders the sums)."""
    spec = bench.SIZES["tiny"]
    eager = bench.build_workload(bench.get_target("nnbackend-numpy"), spec, workload)
    expected = [float(nb.to_numpy(eager())) for _ in range(5)]
    assert expected[-1] < expected[0]
    for name in COMPILED:
        wl = bench.build_workload(bench.get_target(name), spec, workload)
        got = [float(nb.to_numpy(wl())) for _ in range(5)]
        np.testing.assert_allclose(got, expected, rtol=1e-5, err_msg=name)
        step = wl.parts["compiled"]
        assert step.traces == 1 and bench.workload_compile_seconds(wl) == step.compile_seconds > 0


def test_the_peer_refuses_what_it_cannot_run() -> None:
    params = bench.host_parameters(bench.build_model(bench.SIZES["tiny"]))
    with pytest.raises(ValueError, match="optimizer must be 'sgd' or 'adam', got 'lamb'"):
        bench.JaxJitMLP(params, optimizer="lamb")
    with pytest.raises(ValueError, match="at least one"):
        bench.JaxJitMLP([])
