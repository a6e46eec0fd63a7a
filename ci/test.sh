#!/usr/bin/env bash
# The project's test command: a fresh virtual environment, the project installed from its own
# files with the test extras, PyTorch (the reference for the cross-checks) and CuPy (so the
# "CuPy installed, no usable GPU" path is exercised for real), then lint, type check, tests
# (pytest-xdist, one worker per core), the documentation site (ci/docs.sh), the self-check
# of ci/gpu.sh (the GPU run's script, on its CPU-only path) and the packaging check
# (ci/package.sh).
#
#   bash ci/test.sh                 # everything
#   bash ci/test.sh tests/test_x.py # extra arguments go to pytest
#
# VENV (default .venv) chooses where the environment lives; NNBACKEND_CI_REUSE_VENV=1 reuses it.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${VENV:-.venv}"
python="${PYTHON:-python3}"
if [ "${NNBACKEND_CI_REUSE_VENV:-0}" != "1" ] || [ ! -x "$venv/bin/python" ]; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[test,lint,docs,cuda12,release]" "torch==2.13.0"

echo "== versions"
python - <<'PY'
import nnbackend as nb
print("nnbackend", nb.__version__)
for row in nb.available_backends():
    print(f"  {row.name:17} {'yes' if row.available else 'no ':3} {row.reason}")
PY

echo "== ruff"
ruff check .
echo "== mypy"
mypy src/nnbackend

echo "== pytest"
# scikit-learn's Array API dispatch needs SciPy's, which SciPy reads at its import
export SCIPY_ARRAY_API=1
status=0
# One pytest-xdist worker per core (NNBACKEND_TEST_WORKERS overrides; 0 runs in this process),
# each with one BLAS and OpenMP thread: the tests are mostly small arrays, where threads only
# contend, so workers on separate cores halve the suite's time.
workers="${NNBACKEND_TEST_WORKERS:-$(python -c 'import os
cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
print(min(cores or 1, 4))')}"
OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python -m pytest -n "$workers" "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests (exit 5): that is a failure for this project" >&2
  status=1
fi

echo "== docs (Sphinx, warnings as errors)"
docs_status=0
bash ci/docs.sh || docs_status=$?
if [ "$docs_status" -ne 0 ]; then
  echo "== ci/docs.sh FAILED (exit $docs_status)" >&2
  if [ "$status" -eq 0 ]; then status=1; fi
fi

# The GPU run's script, kept from rotting: its CPU-only path on a few tests and a tiny bench,
# with this environment's interpreter (not $PYTHON, which made the environment).
echo "== ci/gpu.sh --quick (self-check of the GPU run script)"
gpu_out=$(mktemp -d)
gpu_status=0
PYTHON="$(command -v python)" OUT="$gpu_out" bash ci/gpu.sh --quick || gpu_status=$?
rm -rf "$gpu_out"
if [ "$gpu_status" -ne 0 ]; then
  echo "== ci/gpu.sh self-check FAILED (exit $gpu_status)" >&2
  if [ "$status" -eq 0 ]; then status=1; fi
else
  echo "== ci/gpu.sh self-check passed"
fi
# The release check: the sdist and the wheel built and checked, the wheel installed alone in a
# fresh environment outside the tree, where the digits job runs (build, twine: the release extra).
echo "== ci/package.sh (sdist, wheel, the wheel installed alone)"
pkg_status=0
PYTHON="$(command -v python)" bash ci/package.sh || pkg_status=$?
if [ "$pkg_status" -ne 0 ]; then
  echo "== ci/package.sh FAILED (exit $pkg_status)" >&2
  if [ "$status" -eq 0 ]; then status=1; fi
fi
exit "$status"
