"""The documentation's examples, run as a reader would run them, so that none goes stale.

Every fenced ```` ```python ```` block of README.md and of the guides (``docs/guides/*.md``,
and the ``.. code-block:: python`` blocks of any ``docs/guides/*.rst``) is executed in a fresh
Python process whose working directory is a temporary directory:

- README.md's blocks stand alone: each runs in its own process. A few need something the README
  leaves out or a shorter run; :data:`README_FIXUPS` says which and why, keyed by a line of the
  block (a fix-up whose line no block has any more fails, so the table cannot rot).
- A guide is a tutorial: its blocks run in order in one process, sharing their variables, as
  in a notebook. Its ```` ```bash ```` blocks run in the same order, in the same directory,
  with ``bash -e`` (``nnbackend`` and ``mpiexec`` from this interpreter's environment), so a
  guide may train with the command line and load the checkpoint in Python. ```` ```console ````
  and ```` ```text ```` blocks are shown, not run: commands that take minutes (the defaults'
  full runs) or need a GPU; the command line's own tests cover them.

Markers, a comment on a block's first line:

- ``# docs-test: skip (reason)``: not run; the reason says why, and the page should say it too.
  Kept rare: a block is written with settings small enough to run here instead.
- ``# file: NAME``: not run; written to ``NAME`` in the working directory, for a later block
  to run (a script for ``mpiexec``, say).

The examples choose their backends themselves; they are not run over the test matrix. They run
with one BLAS and OpenMP thread: their matrix products are small.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
GUIDES = DOCS / "guides"
SKIP = "# docs-test: skip"
FILE = "# file:"
TIMEOUT_S = 180

FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```",
                   re.S | re.M)
RST_BLOCK = re.compile(
    r"^(?P<indent> *)\.\. code-block:: (?P<lang>\w+)\n(?:(?P=indent) +:[^\n]*\n)*\n"
    r"(?P<body>(?:(?:(?P=indent) +[^\n]*)?\n)+)", re.M)
RUN_LANGS = {"python": "python", "py": "python", "bash": "bash", "sh": "bash"}


@dataclass(frozen=True)
class Block:
    """One example: its language, code, and where it starts (file and 1-based line); ``first``
    is the page's line of the code's first line when something was put before it."""

    lang: str
    code: str
    path: Path
    line: int
    first: int | None = None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def first_line(self) -> str:
        return self.code.lstrip("\n").split("\n", 1)[0].strip()


def blocks_of(path: Path, *, langs: tuple[str, ...] = ("python", "bash")) -> list[Block]:
    """The code blocks of a Markdown or reStructuredText page whose language is in ``langs``."""
    text = path.read_text(encoding="utf-8")
    found: list[Block] = []
    pattern = RST_BLOCK if path.suffix == ".rst" else FENCE
    for m in pattern.finditer(text):
        lang = RUN_LANGS.get(m.group("lang"))
        if lang not in langs:
            continue
        body = textwrap.dedent(m.group("body"))
        line = text.count("\n", 0, m.start("body")) + 1
        found.append(Block(lang, body, path, line))
    return found


@dataclass(frozen=True)
class Fixup:
    """What a README block needs to run here, and why: code before it (the variables the
    README's surrounding text implies), text replacements (a shorter run) and code after it
    (checks that it did what the README says)."""

    why: str
    prelude: str = ""
    replace: dict[str, str] = field(default_factory=dict)
    epilogue: str = ""
    only_without_cuda: bool = False


README_FIXUPS: dict[str, Fixup] = {
    "schedule = nb.CosineAnnealingLR(opt, T_max=30)": Fixup(
        "the README's 30 epochs take about 20 s; one epoch of 640 images runs every line",
        replace={"epochs=30,": "epochs=1,",
                 "nb.batches(X_train, y_train,": "nb.batches(X_train[:640], y_train[:640],"},
    ),
    'nnbackend.onnx.export(model, "digits.onnx", X_test[:8])': Fixup(
        "X_test is the digits of the README's training example",
        prelude="from nnbackend.datasets import load_digits\nX_test = load_digits()[0][:100]\n",
        epilogue="assert scores.shape == (100, 10)\n",
    ),
    'nnbackend.onnx.export(lstm, "lstm.onnx", (x, h0, c0)': Fixup(
        "a one-line fragment: the LSTM and its inputs are built first",
        prelude=textwrap.dedent("""\
            import numpy as np
            import nnbackend as nb
            import nnbackend.onnx
            lstm = nb.LSTM(4, 8, batch_first=True, seed=0)
            rng = np.random.default_rng(0)
            x = rng.standard_normal((2, 5, 4)).astype("float32")
            h0 = np.zeros((1, 2, 8), dtype="float32")
            c0 = np.zeros((1, 2, 8), dtype="float32")
        """),
        epilogue=textwrap.dedent("""\
            output, h_n, c_n = nnbackend.onnx.run("lstm.onnx", (x, h0, c0))
            assert output.shape == (2, 5, 8) and h_n.shape == c_n.shape == (1, 2, 8)
        """),
    ),
    "@nnbackend.onnx.converter(Scale)": Fixup(
        "a fragment: the layer Scale is defined first, and the model is exported after",
        prelude=textwrap.dedent("""\
            import numpy as np
            import nnbackend as nb
            import nnbackend.onnx

            class Scale(nb.Module):
                def __init__(self, factor):
                    super().__init__()
                    self.factor = factor

                def forward_pass(self, x, ctx):
                    return x * self.factor, lambda dy: dy * self.factor
        """),
        epilogue=textwrap.dedent("""\
            model = nb.Sequential(nb.Linear(4, 3, seed=0), Scale(2.5), backend="numpy")
            x = np.random.default_rng(0).standard_normal((5, 4)).astype("float32")
            nnbackend.onnx.export(model, "scale.onnx", x)
            np.testing.assert_allclose(nnbackend.onnx.run("scale.onnx", x), model(x),
                                       rtol=1e-5, atol=1e-6)
        """),
    ),
    'MLPClassifier(backend="cupy")': Fixup(
        "without a CUDA device the GPU line trains on the GPU-like test device instead, and "
        "shorter (2 folds, a few epochs: about 20 s otherwise)",
        replace={'MLPClassifier(backend="cupy")': 'MLPClassifier(backend="gpulike", max_iter=5)',
                 "cv=5)": "cv=2)", "max_iter=50)": "max_iter=5)"},
        only_without_cuda=True,
    ),
}


def _cuda_usable() -> bool:
    try:
        cupy = importlib.import_module("cupy")
        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:  # CuPy missing, or installed without a usable driver or device
        return False


def _apply(block: Block, fixup: Fixup | None) -> Block:
    if fixup is None or (fixup.only_without_cuda and _cuda_usable()):
        return block
    code = block.code
    for old, new in fixup.replace.items():
        assert old in code, f"{block.where}: the fix-up's text {old!r} is gone"
        code = code.replace(old, new)
    if not fixup.prelude:
        return Block(block.lang, code + fixup.epilogue, block.path, block.line)
    # the prelude takes the lines before the block, so tracebacks keep the README's numbers
    prelude = fixup.prelude if fixup.prelude.endswith("\n") else fixup.prelude + "\n"
    pad = "\n" * max(block.line - 1 - prelude.count("\n"), 0)
    return Block(block.lang, prelude + pad + code + fixup.epilogue, block.path, block.line,
                 first=1)


def readme_examples() -> list[Any]:
    blocks = blocks_of(README, langs=("python",))
    params = []
    for block in blocks:
        matches = [key for key in README_FIXUPS if key in block.code]
        assert len(matches) <= 1, f"{block.where}: several fix-ups match: {matches}"
        fixup = README_FIXUPS[matches[0]] if matches else None
        marks = [pytest.mark.skip(reason=block.first_line)] if block.first_line.startswith(
            SKIP) else []
        params.append(pytest.param(_apply(block, fixup), marks=marks, id=f"README:{block.line}"))
    return params


def guide_pages() -> list[Path]:
    return sorted(p for p in GUIDES.iterdir() if p.suffix in (".md", ".rst")
                  and p.stem != "index")


# Runs the blocks in order in one namespace; a bash block runs in a shell. Each Python block is
# compiled with its page's name and line numbers, so a traceback points into the page.
DRIVER = textwrap.dedent("""\
    import json, os, subprocess, sys
    ns = {"__name__": "__main__"}
    for b in json.load(open(sys.argv[1], encoding="utf-8")):
        first = b["code"].lstrip("\\n").split("\\n", 1)[0].strip()
        if first.startswith("# docs-test: skip"):
            print(f"== {b['where']}: skipped: {first}", flush=True)
            continue
        if first.startswith("# file:"):
            name = first[len("# file:"):].strip()
            with open(name, "w", encoding="utf-8") as f:
                f.write(b["code"])
            print(f"== {b['where']}: wrote {name}", flush=True)
            continue
        print(f"== {b['where']} ({b['lang']})", flush=True)
        if b["lang"] == "python":
            exec(compile("\\n" * (b["line"] - 1) + b["code"], b["path"], "exec"), ns)
        else:
            sys.stdout.flush()
            done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", b["code"]])
            if done.returncode:
                sys.exit(f"{b['where']}: the shell block exited with {done.returncode}")
""")


def run_blocks(blocks: list[Block], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    spec = tmp_path / "blocks.json"
    spec.write_text(json.dumps([
        {"lang": b.lang, "code": b.code, "line": b.line if b.first is None else b.first,
         "path": str(b.path), "where": b.where}
        for b in blocks]), encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
           "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT / "src") + os.pathsep
           + os.environ.get("PYTHONPATH", ""),
           # the examples' products are small: one BLAS thread is faster, and much faster on
           # a machine shared with other work (two threads waiting on each other)
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("NNBACKEND", None)  # the examples choose, or rely on the documented default
    return subprocess.run([sys.executable, "-c", DRIVER, str(spec)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


def _check(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, (
        f"exit {done.returncode}\n--- stdout\n{done.stdout[-6000:]}\n--- stderr\n"
        f"{done.stderr[-6000:]}")


class Runner:
    """Runs the selected examples' processes two at a time, started as soon as the first of
    them is needed, so that the module takes half the time on two cores; each test waits for
    its own. Under pytest-xdist (whose workers share the cores already) each test runs its
    example itself."""

    def __init__(self, jobs: dict[str, list[Block]], base: Path, workers: int) -> None:
        self.base = base
        self.pool = ThreadPoolExecutor(workers) if workers > 1 else None
        self.futures = {} if self.pool is None else {
            key: self.pool.submit(self._run, key, blocks) for key, blocks in jobs.items()}

    def _run(self, key: str, blocks: list[Block]) -> subprocess.CompletedProcess[str]:
        return run_blocks(blocks, Path(tempfile.mkdtemp(dir=self.base)))

    def result(self, key: str, blocks: list[Block]) -> subprocess.CompletedProcess[str]:
        future = self.futures.get(key)
        return self._run(key, blocks) if future is None else future.result()


def _jobs_of(item: pytest.Item) -> tuple[str, list[Block]] | None:
    params = getattr(getattr(item, "callspec", None), "params", {})
    if "block" in params:
        return params["block"].where, [params["block"]]
    if "page" in params:
        return str(params["page"]), blocks_of(params["page"])
    return None


@pytest.fixture(scope="module")
def runner(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    jobs: dict[str, list[Block]] = {}
    for item in request.session.items:
        job = _jobs_of(item) if item.module is request.module else None
        if job is not None and not item.get_closest_marker("skip"):
            jobs[job[0]] = job[1]
    workers = 1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1)
    # the guides first: they take longest, so the two workers finish close together
    jobs = dict(sorted(jobs.items(), key=lambda job: len(job[1]) == 1))
    run = Runner(jobs, tmp_path_factory.mktemp("docs-examples"), workers)
    yield run
    if run.pool is not None:
        run.pool.shutdown(cancel_futures=True)


@pytest.mark.parametrize("block", readme_examples())
def test_readme_example_runs(block: Block, runner: Runner) -> None:
    """Each of README.md's Python examples runs on its own (with its fix-up, if any)."""
    _check(runner.result(block.where, [block]))


@pytest.mark.parametrize("page", guide_pages(), ids=lambda p: p.name)
def test_guide_runs(page: Path, runner: Runner) -> None:
    """A guide's Python and shell blocks run in order, in one process and one directory."""
    blocks = blocks_of(page)
    assert any(b.lang == "python" for b in blocks), f"{page.name} has no Python example"
    _check(runner.result(str(page), blocks))


def test_readme_fixups_match_one_block_each() -> None:
    """Every fix-up still finds its README block, and only one."""
    blocks = blocks_of(README, langs=("python",))
    for key in README_FIXUPS:
        found = [b.where for b in blocks if key in b.code]
        assert len(found) == 1, f"fix-up {key!r} matches {found}"


def test_every_guide_is_in_the_guides_index() -> None:
    index = (GUIDES / "index.rst").read_text(encoding="utf-8")
    listed = set(re.findall(r"^   (\S+)$", index, re.M))
    assert {p.stem for p in guide_pages()} <= listed


def _api_generator() -> Any:
    """docs/api/_generate.py, the script that writes the API pages (its MODULES list them)."""
    spec = importlib.util.spec_from_file_location("_api_generate", DOCS / "api" / "_generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PUBLIC_MODULES: tuple[str, ...] = tuple(_api_generator().MODULES)


def _listed(page: Path) -> list[str]:
    """The names of a page's autosummary tables (``~a.b.C`` as ``a.b.C``)."""
    names: list[str] = []
    for table in re.finditer(r"^\.\. autosummary::\n((?:   [^\n]*\n|\n)+)", page.read_text(
            encoding="utf-8"), re.M):
        names += [line.strip().lstrip("~") for line in table.group(1).splitlines()
                  if line.strip() and not line.strip().startswith(":")]
    return names


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_api_page_lists_the_modules_all(name: str) -> None:
    """docs/api/NAME.rst documents exactly the module's ``__all__`` (the names added since
    belong on the page; the page builds one API page per name)."""
    module = importlib.import_module(f"nnbackend.{name}")
    assert sorted(_listed(DOCS / "api" / f"{name}.rst")) == sorted(module.__all__), (
        "regenerate the API pages: python docs/api/_generate.py")


def test_api_top_level_page_covers_all() -> None:
    """Every top-level name but the modules and ``__version__`` is on docs/api/nnbackend.rst,
    linked to the module that documents it."""
    import nnbackend

    listed = {n.rsplit(".", 1)[-1]: n for n in _listed(DOCS / "api" / "nnbackend.rst")}
    # after a change: python docs/api/_generate.py
    expected = {n for n in nnbackend.__all__ if n != "__version__"
                and not isinstance(getattr(nnbackend, n), type(nnbackend))}
    assert set(listed) == expected
    for short, target in listed.items():
        if "." in target:  # documented on its module's page: the same object
            module, _, attr = f"nnbackend.{target}".rpartition(".")
            assert getattr(importlib.import_module(module), attr) is getattr(nnbackend, short)
    api_index = (DOCS / "api" / "index.rst").read_text(encoding="utf-8")
    assert all(f"   {m}\n" in api_index for m in PUBLIC_MODULES)
