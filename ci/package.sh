#!/usr/bin/env bash
# The release check: build the sdist and the wheel the way a release is built, check their
# metadata and contents, then install the wheel alone into a fresh virtual environment outside
# the source tree and run the command line's digits job there.
#
#   bash ci/package.sh
#
# PYTHON (default python3) makes the environments. DIST (default dist/) receives the sdist and
# the wheel; earlier nnbackend files there are removed first. build and twine come from the
# `release` extra: used from the running interpreter when it has them (ci/test.sh's environment
# with ".[release]"), else installed into a temporary environment. PyPI must be reachable (the
# build's isolated environment and the wheel's dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

python="${PYTHON:-python3}"
dist="${DIST:-dist}"
start=$SECONDS
work="$(mktemp -d "${TMPDIR:-/tmp}/nnbackend-package.XXXXXX")"
trap 'rm -rf "$work"' EXIT
pip_quiet=(--quiet --disable-pip-version-check)

phase() { echo "== $1 ($((SECONDS - start)) s)"; }

# The one source of the version: the literal in src/nnbackend/__init__.py, which setuptools
# reads without importing the package ([tool.setuptools.dynamic] in pyproject.toml).
version="$("$python" - <<'PY'
import ast
tree = ast.parse(open("src/nnbackend/__init__.py", encoding="utf-8").read())
for node in tree.body:
    if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__"
                                            for t in node.targets):
        print(ast.literal_eval(node.value))
        break
else:
    raise SystemExit("src/nnbackend/__init__.py assigns no literal __version__")
PY
)"
echo "nnbackend $version (from src/nnbackend/__init__.py)"

phase "tools (build, twine)"
tools="$python"
if ! "$python" -c "import build, twine" 2>/dev/null; then
  "$python" -m venv "$work/tools"
  tools="$work/tools/bin/python"
  # the release extra's requirements, read from pyproject.toml (tomllib: Python 3.11+)
  mapfile -t release < <("$tools" - <<'PY'
try:
    import tomllib
except ImportError:  # Python 3.10: the extra as written in pyproject.toml
    print("build>=1"); print("twine>=5")
else:
    with open("pyproject.toml", "rb") as f:
        print(*tomllib.load(f)["project"]["optional-dependencies"]["release"], sep="\n")
PY
  )
  "$tools" -m pip install "${pip_quiet[@]}" "${release[@]}"
fi
"$tools" -m build --version
twine_version="$("$tools" -m twine --version)"
echo "${twine_version%%$'\n'*}"

phase "python -m build (sdist, then the wheel from the sdist)"
mkdir -p "$dist"
rm -f "$dist"/nnbackend-*.tar.gz "$dist"/nnbackend-*.whl
"$tools" -m build --outdir "$dist" . >"$work/build.log" 2>&1 || {
  cat "$work/build.log" >&2
  echo "python -m build failed" >&2
  exit 1
}
grep -E "^Successfully built" "$work/build.log"
sdist="$dist/nnbackend-$version.tar.gz"
wheel="$dist/nnbackend-$version-py3-none-any.whl"
for f in "$sdist" "$wheel"; do
  [ -f "$f" ] || { echo "missing $f (is the version $version?): $(ls "$dist")" >&2; exit 1; }
done

phase "twine check --strict"
"$tools" -m twine check --strict "$sdist" "$wheel"

phase "contents of the sdist and the wheel"
"$python" - "$sdist" "$wheel" "$version" <<'PY'
import re
import sys
import tarfile
import zipfile

sdist, wheel, version = sys.argv[1:]
problems = []

# Caches and build outputs that must never travel, in either archive.
CACHE = re.compile(r"(^|/)(__pycache__|\.pytest_cache|\.benchmarks|\.hypothesis|\.mypy_cache"
                   r"|\.ruff_cache|\.venv|\.git|_build)(/|$)|\.py[cod]$")

with zipfile.ZipFile(wheel) as zf:
    names = zf.namelist()
    metadata = zf.read(f"nnbackend-{version}.dist-info/METADATA").decode()
for name in names:
    top = name.split("/", 1)[0]
    if top not in ("nnbackend", f"nnbackend-{version}.dist-info"):
        problems.append(f"wheel: {name} is outside the package")
    if CACHE.search(name):
        problems.append(f"wheel: {name} is a cache or build output")
for need in ("nnbackend/__init__.py", "nnbackend/py.typed", "nnbackend/cli.py",
             f"nnbackend-{version}.dist-info/licenses/LICENSE",
             f"nnbackend-{version}.dist-info/entry_points.txt"):
    if need not in names:
        problems.append(f"wheel: {need} is missing")
fields = {}
for line in metadata.split("\n\n", 1)[0].splitlines():
    key, _, value = line.partition(": ")
    fields.setdefault(key, []).append(value)
for key, want in (("Version", version), ("License-Expression", "BSD-3-Clause"),
                  ("License-File", "LICENSE")):
    if want not in fields.get(key, []):
        problems.append(f"wheel METADATA: {key} is {fields.get(key)}, expected {want!r}")
required = [r for r in fields.get("Requires-Dist", []) if "extra ==" not in r]
if sorted(re.split(r"[<>=!~ ;\[]", r, maxsplit=1)[0] for r in required) != [
        "array-api-compat", "array-api-extra", "numpy", "threadpoolctl"]:
    problems.append(f"wheel METADATA: required dependencies are {required}")

with tarfile.open(sdist) as tf:
    members = [m.name for m in tf.getmembers()]
prefix = f"nnbackend-{version}/"
inner = [m[len(prefix):] for m in members if m.startswith(prefix)]
if len(inner) != len(members) - 1:  # every member but the top directory is under it
    problems.append(f"sdist: members outside {prefix}")
for name in inner:
    if CACHE.search(name) or name.split("/", 1)[0] in ("dist", "build", "benchmarks", "ci"):
        problems.append(f"sdist: {name} should not be shipped")
    if ".egg-info" in name and name.split("/")[:2] != ["src", "nnbackend.egg-info"]:
        problems.append(f"sdist: {name} is a stray egg-info")
for need in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "PKG-INFO",
             "src/nnbackend/__init__.py", "src/nnbackend/py.typed",
             "tests/conftest.py", "tests/data/checkpoint-v1.npz"):
    if need not in inner:
        problems.append(f"sdist: {need} is missing")

print(f"wheel: {len(names)} files; sdist: {len(inner)} entries")
if problems:
    print("\n".join(problems), file=sys.stderr)
    raise SystemExit(1)
print("no caches, no tests or benchmarks in the wheel; py.typed, LICENSE and metadata present")
PY

phase "the wheel in a fresh environment (outside the source tree)"
"$python" -m venv "$work/venv"
wheel_abs="$root/$wheel"
case "$wheel" in /*) wheel_abs="$wheel" ;; esac
# The wheel and its required dependencies, plus the datasets extra for the digits job.
"$work/venv/bin/python" -m pip install "${pip_quiet[@]}" "$wheel_abs[datasets]"
cd "$work"
# No PYTHONPATH, no NNBACKEND: the installed package and its own defaults only.
env -u PYTHONPATH -u NNBACKEND NNBACKEND_SOURCE="$root" NNBACKEND_VERSION="$version" \
  "$work/venv/bin/python" - <<'PY'
import importlib.metadata
import importlib.resources
import os
import pathlib

import nnbackend

source = pathlib.Path(os.environ["NNBACKEND_SOURCE"]).resolve()
location = pathlib.Path(nnbackend.__file__).resolve()
assert source not in location.parents, f"imported from the source tree: {location}"
assert "site-packages" in location.parts, location
assert importlib.resources.files("nnbackend").joinpath("py.typed").is_file(), "no py.typed"
want = os.environ["NNBACKEND_VERSION"]
assert nnbackend.__version__ == want, (nnbackend.__version__, want)
assert importlib.metadata.version("nnbackend") == want, importlib.metadata.version("nnbackend")
print(f"nnbackend {nnbackend.__version__} from {location.parent}; py.typed present")
PY

phase "nnbackend train (digits MLP, 1 epoch) and info from the installed wheel"
env -u PYTHONPATH -u NNBACKEND "$work/venv/bin/nnbackend" train --epochs 1 --no-progress --json \
  --save "$work/digits.npz" >"$work/train.json"
env -u PYTHONPATH "$work/venv/bin/python" - "$work/train.json" <<'PY'
import json
import sys

with open(sys.argv[1]) as f:
    result = json.loads(f.read().strip().splitlines()[-1])
print({k: result[k] for k in ("backend", "dataset", "model", "epochs", "test_accuracy")})
assert (result["dataset"], result["model"], result["epochs"]) == ("digits", "mlp", 1), result
assert result["test_accuracy"] > 0.5, result["test_accuracy"]
PY
env -u PYTHONPATH -u NNBACKEND "$work/venv/bin/nnbackend" info --checkpoint "$work/digits.npz" \
  >"$work/info.txt"
head -n 3 "$work/info.txt"
cd "$root"

phase "ci/package.sh passed: $sdist, $wheel"
