#!/usr/bin/env bash
# Build the documentation site (docs/ -> docs/_build/html) with every warning an error.
#
#   pip install -e ".[docs]" && bash ci/docs.sh
#
# Runs in the active environment. Exits non-zero on any Sphinx, docutils, autodoc, numpydoc or
# MyST warning (sphinx-build -W --keep-going reports them all before failing). The API pages
# are regenerated from the docstrings on every run (docs/api/generated/ is rebuilt from
# scratch, so a removed name cannot leave a stale page behind).
set -euo pipefail
cd "$(dirname "$0")/.."

# scikit-learn's Array API support (nnbackend.sklearn imports it) reads this at import time.
export SCIPY_ARRAY_API=1
rm -rf docs/api/generated
start=$(date +%s)
python -m sphinx -W --keep-going -b html docs docs/_build/html "$@"
echo "docs: built docs/_build/html with no warnings in $(( $(date +%s) - start )) s"
