"""Sphinx configuration of nnbackend's documentation.

Build with ``bash ci/docs.sh`` (warnings are errors), or
``sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version

# The package is imported from this tree when it is not installed (an editable install finds it
# anyway); the examples and the API pages describe the code next to them.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

project = "nnbackend"
author = "The nnbackend developers"
copyright = "the nnbackend developers"
try:
    release = version("nnbackend")
except PackageNotFoundError:  # pragma: no cover - a source tree without an install
    import nnbackend

    release = nnbackend.__version__
version_short = ".".join(release.split(".")[:2])
version = version_short

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build"]

# -- API pages ---------------------------------------------------------------------------------
# docs/api/*.rst list every name of each public module's __all__ (tests/test_docs_examples.py
# checks that they still do); autosummary writes one page per name into docs/api/generated/.
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # the signatures and numpydoc's sections say what the types are
autodoc_inherit_docstrings = True

# The docstrings are numpydoc where they have sections, prose elsewhere: render both, check
# nothing beyond what Sphinx itself warns about.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()
numpydoc_attributes_as_param_list = True

nitpicky = False
default_role = "code"  # `x` in a docstring is inline code, as in Markdown

# -- Markdown (docs/design.md and the guides) -------------------------------------------------
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# -- HTML ---------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"nnbackend {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 5,
}
html_static_path: list[str] = []


def _skip_member(
    app: object, what: str, name: str, obj: object, skip: bool, options: object
) -> bool | None:
    """Leave out what the estimators inherit from scikit-learn's metadata routing
    (``set_fit_request`` and the like: generated methods whose docstrings refer to
    scikit-learn's own glossary)."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app: object) -> None:
    app.connect("autodoc-skip-member", _skip_member)  # type: ignore[attr-defined]
