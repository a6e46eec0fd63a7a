"""Write the API pages (docs/api/*.rst) from each public module's ``__all__``.

    SCIPY_ARRAY_API=1 python docs/api/_generate.py

Each module's page lists its names by kind (modules, classes, functions, exceptions and
warnings, constants) in autosummary tables, which build one page per name; the top-level page
links each re-exported name to the page of the module that documents it.
tests/test_docs_examples.py fails when a page and its module's ``__all__`` differ: run this
after adding or removing a public name, and commit the pages.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from types import ModuleType

import nnbackend

HERE = Path(__file__).resolve().parent
MODULES = ("backend", "layers", "functional", "losses", "optim", "models", "data", "datasets",
           "text", "train", "checkpoint", "state", "random", "init", "compile", "distributed",
           "sklearn", "onnx", "testing", "bench")
KINDS = ("Modules", "Classes", "Functions", "Exceptions", "Constants")


def kind(obj: object) -> str:
    if inspect.ismodule(obj):
        return "Modules"
    if inspect.isclass(obj):
        return "Exceptions" if issubclass(obj, BaseException) else "Classes"
    return "Functions" if callable(obj) else "Constants"


def section(title: str, names: list[str], *, toctree: bool) -> list[str]:
    lines = [title, "-" * len(title), "", ".. autosummary::"]
    if toctree:
        lines.append("   :toctree: generated/")
    return [*lines, "   :nosignatures:", "", *(f"   {n}" for n in names), ""]


def page(name: str, intro: list[str], groups: dict[str, list[str]], *, toctree: bool,
         extra: list[str] | None = None) -> str:
    lines = [name, "=" * len(name), "", f".. automodule:: {name}", "   :no-members:", "",
             f".. currentmodule:: {name}", "", *intro]
    for k in KINDS:
        if groups.get(k):
            lines += section(k, groups[k], toctree=toctree)
    return "\n".join([*lines, *(extra or [])]).rstrip() + "\n"


def main() -> None:
    where: dict[int, str] = {}
    for m in MODULES:
        module: ModuleType = importlib.import_module(f"nnbackend.{m}")
        groups: dict[str, list[str]] = {}
        for n in module.__all__:
            obj = getattr(module, n)
            where.setdefault(id(obj), f"{m}.{n}")
            groups.setdefault(kind(obj), []).append(n)
        (HERE / f"{m}.rst").write_text(page(f"nnbackend.{m}", [], groups, toctree=True),
                                       encoding="utf-8")

    groups = {}
    own: list[str] = []
    for n in nnbackend.__all__:
        obj = getattr(nnbackend, n)
        if n == "__version__" or inspect.ismodule(obj):
            continue
        if id(obj) in where:
            groups.setdefault(kind(obj), []).append("~" + where[id(obj)])
        else:
            own.append(n)
    for names in groups.values():
        names.sort(key=lambda s: s.rsplit(".", 1)[1].lower())
    intro = ["Everything below is importable from the top level (``import nnbackend as nb; "
             "nb.Linear``);", "each name links to the page of the module that defines it.", ""]
    text = page("nnbackend", intro, groups, toctree=False,
                extra=section("Gradient checks", own, toctree=True))
    (HERE / "nnbackend.rst").write_text(text, encoding="utf-8")

    index = ["API reference", "=============", "",
             "Generated from the docstrings. The top level re-exports the names most programs "
             "use;", "every public module lists its ``__all__``.", "", ".. toctree::",
             "   :maxdepth: 1", "", "   nnbackend", *(f"   {m}" for m in MODULES)]
    (HERE / "index.rst").write_text("\n".join(index) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
