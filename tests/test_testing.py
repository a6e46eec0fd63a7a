"""The GPU-like test device keeps CuPy's rules: each rule checked against what CuPy does."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import array_api_compat
import numpy as np
import pytest

import nnbackend as nb
from nnbackend.testing import count_host_reads, gpulike


def _x() -> Any:
    return gpulike.asarray(np.arange(6.0).reshape(2, 3))


def test_arrays_live_off_the_host_on_their_own_device_object() -> None:
    x = _x()
    assert array_api_compat.array_namespace(x) is gpulike
    assert array_api_compat.device(x) == gpulike.Device(0) != "cpu"
    assert x.__dlpack_device__() == (2, 0)  # kDLCUDA, as a CuPy array reports
    assert not nb.backend.is_host_array(x)
    assert gpulike.asarray(x, device=gpulike.Device(1)).__dlpack_device__() == (2, 1)


@pytest.mark.parametrize("convert", [np.asarray, np.array, memoryview, bytes])
def test_implicit_host_conversion_is_a_type_error(convert: Any) -> None:
    with pytest.raises(TypeError):
        convert(_x())


def test_there_is_no_array_interface_and_no_dlpack_export_to_the_host() -> None:
    x = _x()
    assert not hasattr(x, "__array_interface__")
    with pytest.raises(BufferError):
        np.from_dlpack(x)


def test_host_arrays_do_not_mix_with_device_arrays() -> None:
    x = _x()
    with pytest.raises(TypeError, match="Unsupported type"):
        x + np.ones(3)
    with pytest.raises(TypeError, match="Unsupported type"):
        np.ones(3) + x  # NumPy defers to the device array, which refuses
    with pytest.raises(TypeError, match="host array"):
        gpulike.add(x, np.ones(3))
    with pytest.raises(TypeError):
        x[0] = np.ones(3)
    with pytest.raises(TypeError, match="NumPy array cannot index"):
        x[np.array([0])]


def test_a_move_from_the_host_always_copies() -> None:
    host = np.ones(3)
    with pytest.raises(ValueError, match="Unable to avoid copy"):
        gpulike.asarray(host, copy=False)
    x = gpulike.asarray(host)
    host[0] = 5.0
    assert x.get()[0] == 1.0
    assert gpulike.asarray(x) is x and gpulike.asarray(x, copy=False) is x
    with pytest.raises(ValueError, match="Unable to avoid copy"):
        gpulike.asarray(x, device=gpulike.Device(1), copy=False)


def test_arrays_on_different_devices_do_not_mix() -> None:
    a = gpulike.zeros(3, device=gpulike.Device(0))
    b = gpulike.zeros(3, device=gpulike.Device(1))
    with pytest.raises(ValueError, match="different devices"):
        a + b
    with pytest.raises(ValueError, match="different devices"):
        gpulike.stack([a, b])


def test_creation_without_device_uses_the_current_device_zero() -> None:
    assert gpulike.zeros(2).device == gpulike.Device(0)
    assert gpulike.ones_like(gpulike.zeros(2, device=gpulike.Device(1))).device.id == 1
    with pytest.raises(ValueError, match="gpulike Device"):
        gpulike.zeros(2, device="cpu")


def test_slices_are_views_and_in_place_operators_write_in_place() -> None:
    x = _x()
    row = x[0, :]
    row += 10.0
    flat = gpulike.reshape(x, (6,))
    flat[5:] = -1.0
    np.testing.assert_array_equal(x.get(), [[10.0, 11.0, 12.0], [3.0, 4.0, -1.0]])


def test_native_out_spellings_write_into_out() -> None:
    a = gpulike.asarray(np.arange(6.0).reshape(2, 3))
    out = gpulike.zeros((2, 2), dtype=gpulike.float64)
    assert gpulike.matmul(a, a.T, out=out) is out
    host = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(out.get(), host @ host.T)
    total = gpulike.zeros(3, dtype=gpulike.float64)
    gpulike.sum(a, axis=0, out=total)
    np.testing.assert_array_equal(total.get(), [3.0, 5.0, 7.0])


@pytest.mark.parametrize(
    ("read", "kind"),
    [
        (float, "float"), (int, "int"), (bool, "bool"),
        (lambda a: a.item(), "item"), (lambda a: a.tolist(), "tolist"),
        (lambda a: a.get(), "get"), (repr, "repr"), (nb.to_numpy, "get"),
        (lambda a: nb.get_backend("gpulike").to_numpy(a), "get"),
    ],
)
def test_every_host_read_is_counted_with_its_source_line(read: Any, kind: str) -> None:
    x = gpulike.asarray(np.array(3, dtype=np.int64))
    with count_host_reads() as outer:
        with count_host_reads() as inner:
            read(x)
        read(x)
    assert [r.kind for r in inner.reads] == [kind]
    assert outer.count == 2
    assert inner.reads[0].where.startswith(__file__)
    assert kind in repr(inner)


def test_arithmetic_reads_nothing_and_gives_numpys_values() -> None:
    host = np.linspace(-3.0, 3.0, 12).reshape(3, 4).astype(np.float32)
    x = gpulike.asarray(host)
    with count_host_reads() as reads:
        results = [
            gpulike.exp(x), x @ x.mT, gpulike.where(x > 0, x, 0.0), gpulike.max(x, axis=1),
            gpulike.take(x, gpulike.asarray(np.array([2, 0])), axis=0), x * (x > 0), -x[1:, ::2],
            gpulike.concat([x, x], axis=0), gpulike.astype(x, gpulike.float64),
            gpulike.unique_counts(gpulike.round(x)).counts, len(x), [row for row in x][1],
        ]
    assert reads.count == 0
    expected = [
        np.exp(host), host @ host.T, np.where(host > 0, host, 0.0), host.max(axis=1),
        host[[2, 0]], host * (host > 0), -host[1:, ::2], np.concatenate([host, host]),
        host.astype(np.float64), np.unique(np.round(host), return_counts=True)[1], 3, host[1],
    ]
    for got, want in zip(results, expected, strict=True):
        if isinstance(want, int):
            assert got == want
            continue
        value = got.get()
        assert value.dtype == np.asarray(want).dtype
        np.testing.assert_array_equal(value, want)


def test_the_namespace_answers_the_standards_inspection() -> None:
    info = gpulike.__array_namespace_info__()
    assert info.default_device() == gpulike.Device(0)
    assert info.devices() == [gpulike.Device(0), gpulike.Device(1)]
    assert info.dtypes()["float32"] == gpulike.float32
    assert gpulike.isdtype(gpulike.float32, "real floating")
    assert gpulike.finfo(gpulike.float32).eps == np.finfo(np.float32).eps


def test_gpulike_is_selected_like_any_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    assert nb.get_backend("gpulike").device == gpulike.Device(0)
    assert nb.get_backend("gpulike:1").device == gpulike.Device(1)
    assert nb.get_backend(gpulike).name == "gpulike"
    monkeypatch.setenv(nb.backend.ENV_VAR, "gpulike:1")
    assert nb.get_backend().device == gpulike.Device(1)
    with pytest.raises(ValueError, match=r"devices 0\.\.1"):
        nb.get_backend("gpulike:7")
    with pytest.raises(ValueError, match="must be a number"):
        nb.get_backend("gpulike:x")


def test_flat_buffers_and_native_paths_are_chosen_by_capability() -> None:
    from nnbackend import _native
    from nnbackend._libraries import library_of

    assert nb.backend.supports_views(gpulike)
    assert library_of(gpulike).native is gpulike  # CuPy's spellings: matmul/sum with out=
    a = gpulike.asarray(np.ones((2, 3), dtype=np.float32))
    out = gpulike.zeros((2, 2), dtype=gpulike.float32)
    assert _native.matmul_into(a, a.mT, out, gpulike)
    assert _native.sum_into(a, gpulike.zeros(3, dtype=gpulike.float32), axis=0, xp=gpulike)


def test_the_command_line_trains_on_gpulike_from_the_environment(tmp_path: Any) -> None:
    env = {**os.environ, nb.backend.ENV_VAR: "gpulike"}
    run = subprocess.run(
        [sys.executable, "-m", "nnbackend", "train", "--dataset", "blobs", "--epochs", "2",
         "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False,
    )
    assert run.returncode == 0, run.stderr
    assert '"backend": "gpulike"' in run.stdout


def test_like_cupy_14_there_is_no_index_and_no_to_device() -> None:
    n = gpulike.asarray(3)
    with pytest.raises(TypeError):
        range(n)  # type: ignore[call-overload]
    assert not hasattr(n, "to_device")


def test_zero_d_results_of_indexing_and_iteration_are_views() -> None:
    a = gpulike.asarray(np.arange(3.0, dtype=np.float32))
    first = next(iter(a))
    first += 10.0
    a[1][...] = 5.0
    z = gpulike.asarray(1.0)
    z[()][...] = 3.0
    np.testing.assert_array_equal(a.get(), [10.0, 5.0, 2.0])
    assert float(z) == 3.0


@pytest.mark.parametrize(
    "call",
    [
        lambda a, n: gpulike.sum([1.0, 2.0]),
        lambda a, n: gpulike.maximum(a, [1.0, 2.0, 3.0]),
        lambda a, n: gpulike.concat([[1.0], [2.0]]),
        lambda a, n: gpulike.zeros((n,)),
        lambda a, n: gpulike.arange(n),
        lambda a, n: gpulike.reshape(gpulike.ones(6), (2, n)),
        lambda a, n: gpulike.sum(a, axis=gpulike.asarray(1)),
    ],
)
def test_host_lists_and_device_ints_are_refused_as_on_cupy(call: Any) -> None:
    a = gpulike.asarray(np.ones((2, 3), np.float32))
    with count_host_reads() as reads, pytest.raises(TypeError):
        call(a, gpulike.asarray(3))
    assert reads.count == 0


def test_astype_to_another_device_copies() -> None:
    a = gpulike.asarray(np.zeros(3, np.float32))
    b = gpulike.astype(a, gpulike.float32, copy=False, device=gpulike.Device(1))
    b[...] = -1.0
    np.testing.assert_array_equal(a.get(), [0.0, 0.0, 0.0])
