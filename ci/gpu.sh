#!/usr/bin/env bash
# The GPU run: the whole test suite with the CuPy and PyTorch-CUDA rows live, then the benchmark,
# on a CUDA machine without network, with the Python already installed there.
#
#   bash ci/gpu.sh                       # full run: versions, whole suite, bench (under 8 minutes)
#   bash ci/gpu.sh tests/test_optim.py   # extra arguments go to pytest
#   bash ci/gpu.sh --quick               # self-check (also GPU_SH_SELFTEST=1): a small selection
#                                        # of tests and a tiny bench; CI runs it on a CPU
#
# Nothing is created or downloaded: no virtual environment, no build, no network. The package
# runs from this tree (src/ on PYTHONPATH, run as `python -m nnbackend`); wheels of missing
# pure-Python dependencies can be supplied from a directory (WHEELS=DIR), which are installed
# with `pip --no-index --no-deps` into a temporary directory that is also put on PYTHONPATH.
#
# Environment:
#   PYTHON=python3         the interpreter to use (it must hold numpy, pytest and hypothesis;
#                          array-api-compat and array-api-strict may come from WHEELS)
#   WHEELS=DIR             wheels of the missing pure-Python packages, made on a networked machine:
#                            python -m pip download --no-deps -d wheels array-api-compat array-api-strict
#   OUT=DIR                where logs and results go (default: gpu-out in the repository):
#                            versions.txt, pytest.log, pytest.xml (JUnit), bench.log, bench.json,
#                            summary.txt (the last line of the run)
#   GPU_SH_TIME_LIMIT=470  seconds for the whole run; each phase gets a share (see below)
#   GPU_SH_BENCH_TIMEOUT   seconds kept for the bench (default 150; 60 with --quick)
#   GPU_SH_REQUIRE_GPU     1: fail unless a GPU row (cupy-*, torch-cuda) passed a test; 0: never;
#                          auto (default): 1 when `nvidia-smi -L` lists a GPU
#
# Exit status: 0 when every phase passed. Otherwise that of the first phase that failed: 2 when
# the environment cannot run the suite (a dependency missing), pytest's own status (5, no tests
# collected, is a failure), 124 for a phase stopped at its time limit, the bench's status, 1 when
# a GPU is required but no GPU row ran. The last line printed (also in OUT/summary.txt) says which.
set -uo pipefail

caller_dir=$PWD
cd "$(dirname "$0")/.." || exit 2
repo=$PWD
start=$SECONDS

quick=0
if [ "${GPU_SH_SELFTEST:-0}" = "1" ]; then quick=1; fi
case "${1:-}" in
  --quick) quick=1; shift ;;
  -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac
mode=$([ "$quick" = 1 ] && echo "self-check" || echo "full")

absolute() {  # a path given relative to where the script was called from
  case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$caller_dir/$1" ;; esac
}

out=$(absolute "${OUT:-$repo/gpu-out}")
mkdir -p "$out" || { echo "gpu.sh: cannot create OUT=$out" >&2; exit 2; }
python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
  python=python
fi
time_limit=${GPU_SH_TIME_LIMIT:-$([ "$quick" = 1 ] && echo 180 || echo 470)}
bench_timeout=${GPU_SH_BENCH_TIMEOUT:-$([ "$quick" = 1 ] && echo 60 || echo 150)}
require_gpu=${GPU_SH_REQUIRE_GPU:-auto}

summary() {  # the one last line, also kept in OUT/summary.txt
  local line="gpu.sh ($mode): $1; $((SECONDS - start)) s"
  echo "$line" | tee "$out/summary.txt"
}

if ! command -v "$python" >/dev/null 2>&1; then
  summary "not run: no Python interpreter (set PYTHON=/path/to/python)"
  exit 2
fi

# The tree itself, first on the path: nothing is installed. Absolute, for the tests'
# subprocesses that run elsewhere.
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# JAX with CUDA takes 75 % of the GPU's memory at its first use unless told otherwise, which
# would leave CuPy and PyTorch (in the same test process) short.
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"

have_timeout=0
if command -v timeout >/dev/null 2>&1; then have_timeout=1; fi

bounded() {  # bounded SECONDS CMD...: CMD, interrupted (then killed) past SECONDS; 124 if so
  local seconds=$1
  shift
  if [ "$have_timeout" = 1 ]; then
    timeout --signal=INT --kill-after=20 "$seconds" "$@"
  else
    "$@"
  fi
}

remaining() { echo $((time_limit - (SECONDS - start))); }

# ------------------------------------------------------------------------------ dependencies
# The distributions the run needs, by import name. The first two are the package's own
# dependencies: without them nnbackend does not import at all.
missing_modules() {
  "$python" - <<'PY'
import importlib.util
import sys

names = {"numpy": "numpy", "array_api_compat": "array-api-compat", "pytest": "pytest",
         "hypothesis": "hypothesis", "array_api_strict": "array-api-strict"}
print(" ".join(dist for module, dist in names.items() if importlib.util.find_spec(module) is None))
PY
}

# Pure-Python wheels this script installs from WHEELS when they are missing (hypothesis needs
# sortedcontainers); numpy and pytest are the machine's to provide.
wheel_names() {
  local dist
  for dist in "$@"; do
    case "$dist" in
      array-api-compat|array-api-strict) echo "$dist" ;;
      hypothesis) echo "hypothesis sortedcontainers" ;;
    esac
  done
}

site_dir=""
# shellcheck disable=SC2317  # called by the trap
cleanup() { if [ -n "$site_dir" ]; then rm -rf "$site_dir"; fi; }
trap cleanup EXIT

install_wheels() {  # install_wheels DIST...: from WHEELS into a temporary directory on the path
  local wheels
  wheels=$(absolute "$WHEELS")
  if [ ! -d "$wheels" ]; then
    echo "gpu.sh: WHEELS=$WHEELS is not a directory" >&2
    return 1
  fi
  site_dir=$(mktemp -d "${TMPDIR:-/tmp}/gpu-sh-site.XXXXXX")
  echo "== installing from $wheels: $* (into $site_dir)"
  if "$python" -m pip --version >/dev/null 2>&1; then
    export PIP_ROOT_USER_ACTION=ignore  # pip as root in a throwaway target: nothing to warn about
    "$python" -m pip install --quiet --disable-pip-version-check --no-index \
      --find-links "$wheels" --no-deps --no-build-isolation --target "$site_dir" "$@" || return 1
  else
    # No pip: a pure-Python wheel is a zip of the files that go into site-packages.
    "$python" - "$wheels" "$site_dir" "$@" <<'PY' || return 1
import pathlib
import re
import sys
import zipfile

wheels, site, names = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
for name in names:
    stem = re.sub(r"[-_.]+", "_", name).lower()
    found = sorted(p for p in wheels.glob("*.whl")
                   if re.sub(r"[-_.]+", "_", p.name.split("-")[0]).lower() == stem)
    if not found:
        sys.exit(f"gpu.sh: no wheel of {name} in {wheels}")
    zipfile.ZipFile(found[-1]).extractall(site)
    print(f"  unpacked {found[-1].name}")
PY
  fi
  export PYTHONPATH="$PYTHONPATH:$site_dir"
}

# shellcheck disable=SC2207
missing=($(missing_modules))
if [ "${#missing[@]}" -gt 0 ] && [ -n "${WHEELS:-}" ]; then
  # shellcheck disable=SC2046
  install_wheels $(wheel_names "${missing[@]}") || echo "gpu.sh: installing from WHEELS failed" >&2
  # shellcheck disable=SC2207
  missing=($(missing_modules))
fi

fatal=()
for dist in "${missing[@]}"; do
  case "$dist" in
    array-api-strict)
      echo "gpu.sh: array-api-strict is missing: its rows of the matrix will be skipped" >&2 ;;
    *) fatal+=("$dist") ;;
  esac
done
if [ "${#fatal[@]}" -gt 0 ]; then
  cat >&2 <<EOF

gpu.sh: $python cannot run the suite: missing ${fatal[*]}
  (array-api-compat is nnbackend's own dependency: without it the package does not import.)
  This script downloads nothing. Supply the pure-Python wheels from a directory:
    on a machine with network (any OS and Python: these wheels are py3-none-any):
      python -m pip download --no-deps -d wheels array-api-compat array-api-strict
      (add hypothesis sortedcontainers if hypothesis is missing too)
    copy wheels/ next to this tree, then here:
      WHEELS=wheels bash ci/gpu.sh
  numpy and pytest must come with the machine's Python (or choose another: PYTHON=...).
EOF
  summary "not run: missing ${fatal[*]} (supply WHEELS=DIR, see above)"
  exit 2
fi

where=$("$python" -c 'import nnbackend; print(nnbackend.__file__)' 2>&1)
case "$where" in
  "$repo/src/"*) ;;
  *)
    echo "gpu.sh: nnbackend does not import from this tree ($repo/src): $where" >&2
    summary "not run: nnbackend does not import from $repo/src"
    exit 2 ;;
esac

# ------------------------------------------------------------------------------ versions
echo "== versions and devices (OUT/versions.txt)"
{
  bounded 120 "$python" - <<'PY'
import os
import platform
import sys


def show(name, describe):
    try:
        print(f"{name:17} {describe()}")
    except ImportError as exc:
        print(f"{name:17} not installed ({exc.__class__.__name__}: {exc})")
    except Exception as exc:  # a broken library is reported, not fatal
        print(f"{name:17} unusable: {exc.__class__.__name__}: {exc}")


def version(module):
    return getattr(__import__(module), "__version__", "?")


def cuda_version(number):
    return f"{number // 1000}.{number % 1000 // 10}"


def cupy_line():
    import cupy

    rt = cupy.cuda.runtime
    count = rt.getDeviceCount()
    names = [rt.getDeviceProperties(i)["name"].decode() for i in range(count)]
    return (f"{cupy.__version__}; CUDA runtime {cuda_version(rt.runtimeGetVersion())}, "
            f"driver {cuda_version(rt.driverGetVersion())}; {count} device(s): "
            + ", ".join(names))


def torch_line():
    import torch

    cuda = torch.cuda.is_available()
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    return (f"{torch.__version__}; built for CUDA {torch.version.cuda}; "
            f"cuda available: {cuda}" + (f"; devices: {', '.join(names)}" if names else ""))


def jax_line():
    import jax

    return f"{jax.__version__}; devices: {jax.devices()}"


print(f"{'python':17} {sys.version.split()[0]} ({sys.executable}) on {platform.platform()}")
for module in ("numpy", "array_api_compat", "array_api_strict", "pytest", "hypothesis"):
    show(module, lambda module=module: version(module))
show("cupy", cupy_line)
show("torch", torch_line)
show("jax", jax_line)

import nnbackend as nb

print(f"{'nnbackend':17} {nb.__version__} ({os.path.dirname(nb.__file__)})")
for row in nb.available_backends():
    print(f"  {row.name:17} {'yes' if row.available else 'no ':3} {row.reason}")
for var in ("CUDA_VISIBLE_DEVICES", "NNBACKEND", "PYTHONPATH", "XLA_PYTHON_CLIENT_PREALLOCATE",
            "JAX_PLATFORMS", "CUPY_CACHE_DIR"):
    print(f"{var}={os.environ.get(var, '(unset)')}")
PY
  echo "versions: exit $?"
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "nvidia-smi -L:"
    bounded 30 nvidia-smi -L 2>&1
  else
    echo "nvidia-smi: not found"
  fi
} 2>&1 | tee "$out/versions.txt"

gpus_listed=0
if command -v nvidia-smi >/dev/null 2>&1; then
  gpus_listed=$(bounded 30 nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
fi
if [ "$require_gpu" = "auto" ]; then
  require_gpu=$([ "$gpus_listed" -gt 0 ] && echo 1 || echo 0)
fi

# ------------------------------------------------------------------------------ pytest
if [ "$quick" = 1 ]; then
  # A small selection: the NumPy float32 row and the GPU rows (skipped here, saying why).
  selection=(tests/test_losses.py tests/test_layers.py -k "numpy-float32 or cupy or torch-cuda")
else
  selection=()
fi
# The data-parallel tests launch `mpiexec` from beside the interpreter (the mpich wheel of the
# test extras puts it there). A machine's Python without mpi4py and mpich cannot run them: they
# are left out, and said so, rather than failing the GPU run (CI runs them on every change).
if ! "$python" -c 'import mpi4py' >/dev/null 2>&1 \
    || [ ! -x "$(dirname "$(command -v "$python")")/mpiexec" ]; then
  mpi_files=$(grep -l '/ "mpiexec"' tests/test_*.py 2>/dev/null | tr '\n' ' ')
  echo "== MPI launches left out (no mpi4py or no mpiexec beside $python): $mpi_files"
  for f in $mpi_files; do selection+=(--ignore="$f"); done
fi
# The bench keeps its share of the time limit; pytest gets the rest.
pytest_timeout=$(( $(remaining) - bench_timeout - 10 ))
if [ "$pytest_timeout" -lt 30 ]; then pytest_timeout=30; fi
durations=()
if [ "$quick" = 0 ]; then durations=(--durations=15); fi  # where the GPU run's time goes
timeout_plugin=()
if "$python" -c 'import pytest_timeout' >/dev/null 2>&1; then
  timeout_plugin=(--timeout=120)  # one hung test fails alone instead of eating the phase
fi

echo "== pytest (${pytest_timeout} s at most; OUT/pytest.log, OUT/pytest.xml)"
rm -f "$out/pytest.xml"
bounded "$pytest_timeout" "$python" -m pytest -p no:cacheprovider -q "${durations[@]}" \
  --junitxml="$out/pytest.xml" "${timeout_plugin[@]}" "${selection[@]}" "$@" 2>&1 \
  | tee "$out/pytest.log"
pytest_status=${PIPESTATUS[0]}

# ------------------------------------------------------------------------------ bench
# shellcheck disable=SC2054  # the commas belong to --backends and --sizes
if [ "$quick" = 1 ]; then
  bench_args=(--backends numpy,cupy --sizes small)
else
  bench_args=(--backends numpy,cupy,torch --sizes small,medium,large)
fi
bench_limit=$(( $(remaining) - 5 ))
rm -f "$out/bench.json"
if [ "$bench_limit" -lt 10 ]; then
  echo "== bench: not run, the time limit (${time_limit} s) is spent" | tee "$out/bench.log"
  bench_status=124
  bench_limit=0
else
  if [ "$bench_limit" -gt "$bench_timeout" ]; then bench_limit=$bench_timeout; fi
  echo "== bench (${bench_limit} s at most; OUT/bench.log, OUT/bench.json)"
  bounded "$bench_limit" "$python" -m nnbackend bench "${bench_args[@]}" --json "$out/bench.json" \
    2>&1 | tee "$out/bench.log"
  bench_status=${PIPESTATUS[0]}
fi

# ------------------------------------------------------------------------------ summary
"$python" - "$out" "$pytest_status" "$bench_status" "$require_gpu" "$pytest_timeout" \
  "$bench_limit" > "$out/summary.parts" <<'PY'
"""Print: the status to exit with, then the summary text (without the elapsed time)."""
import json
import re
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

out, pytest_status, bench_status, require_gpu = Path(sys.argv[1]), *map(int, sys.argv[2:5])
pytest_limit, bench_limit = sys.argv[5:7]
ROWS = {"cupy": re.compile(r"\[(?:.*-)?cupy(?:-[^\]]*)?\]$"),
        "torch-cuda": re.compile(r"\[(?:.*-)?torch-cuda(?:-[^\]]*)?\]$")}


def outcome(case):
    for tag in ("failure", "error", "skipped"):
        child = case.find(tag)
        if child is not None:
            return tag, child.get("message", "")
    return "passed", ""


def tests_part():
    junit = out / "pytest.xml"
    if not junit.exists():
        return f"tests: no results (pytest exit {pytest_status})", {}
    totals, rows, reasons = Counter(), {row: Counter() for row in ROWS}, {row: [] for row in ROWS}
    for case in ET.parse(junit).getroot().iter("testcase"):
        if not case.get("name"):
            continue  # the test an interrupt stopped: recorded without a name or an outcome
        tag, message = outcome(case)
        totals[tag] += 1
        for row, pattern in ROWS.items():
            if pattern.search(case.get("name", "")):
                rows[row][tag] += 1
                if tag == "skipped" and message not in reasons[row]:
                    reasons[row].append(message)
    text = (f"tests {totals['passed']} passed {totals['failure']} failed "
            f"{totals['error']} errors {totals['skipped']} skipped")
    row_texts = []
    for row, count in rows.items():
        if count["passed"] or count["failure"] or count["error"]:
            row_texts.append(f"{row} rows: {count['passed']} passed"
                             + (f" {count['failure'] + count['error']} failed"
                                if count["failure"] or count["error"] else ""))
        elif count["skipped"]:
            reason = "; ".join(r.removeprefix("Skipped: ") for r in reasons[row][:2])
            row_texts.append(f"{row} rows skipped: {reason}")
        else:
            row_texts.append(f"{row} rows: none selected")
    if pytest_status == 124:
        text += f", stopped at the {pytest_limit} s limit"
    elif pytest_status:
        text += f", pytest exit {pytest_status}"
    return f"{text} ({'; '.join(row_texts)})", rows


def bench_part():
    if bench_status == 124 and bench_limit == "0":
        return "bench: not run, the time limit was spent"
    if bench_status == 124:
        return f"bench: stopped at the {bench_limit} s limit (partial table in bench.log)"
    if bench_status:
        return f"bench: failed (exit {bench_status}, see bench.log)"
    try:
        document = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"bench: no JSON ({exc.__class__.__name__})"
    targets = sorted({row["target"] for row in document["rows"]})
    text = f"bench: ok, {len(document['rows'])} rows ({', '.join(targets)})"
    if document.get("unavailable"):
        text += f", unavailable: {', '.join(document['unavailable'])}"
    return text


tests, rows = tests_part()
gpu_passed = sum(count["passed"] for count in rows.values())
parts = [tests, bench_part()]
gpu_status = 0
if gpu_passed == 0:
    if require_gpu:
        parts.append("GPU REQUIRED but no GPU row ran")
        gpu_status = 1
    else:
        parts.append("CPU-only run: no GPU row ran")
status = next((s for s in (pytest_status, bench_status, gpu_status) if s), 0)
print(status)
print(("FAILED: " if status else "ok: ") + "; ".join(parts))
PY
summary_status=$?
if [ "$summary_status" -ne 0 ]; then
  summary "summary failed (exit $summary_status); pytest exit $pytest_status, bench exit $bench_status"
  exit 1
fi
status=$(sed -n 1p "$out/summary.parts")
summary "$(sed -n 2p "$out/summary.parts")"
rm -f "$out/summary.parts"
exit "$status"
