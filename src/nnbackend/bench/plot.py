"""``nnbackend bench --plot``: samples/s of the SGD training step against batch size."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .specs import SIZES, MLPSpec
from .timing import measure
from .workloads import Target, build_workload

__all__: list[str] = []

_PLOT_HINT = "pip install 'nnbackend[plot]'"
_PLOT_BATCHES = (16, 32, 64, 128, 256, 512, 1024)
_PLOT_WORKLOAD = "train-sgd"


def _plot_throughput(targets: Sequence[Target], specs: Sequence[MLPSpec], batches: Sequence[int],
                     path: Path, *, figure_class: Any, budget_s: float) -> list[dict[str, Any]]:
    """Measure the sweep and draw it to ``path``: one panel per size except ``large`` (small and
    medium when only large is given); returns the measured points."""
    plot_specs = [s for s in specs if s.name != "large"] or [SIZES["small"], SIZES["medium"]]
    points = _sweep(targets, plot_specs, batches, budget_s=budget_s)
    _plot(points, path, figure_class)
    return points


def _sweep(targets: Sequence[Target], specs: Sequence[MLPSpec], batches: Sequence[int], *,
           budget_s: float) -> list[dict[str, Any]]:
    """Throughput of the SGD training step against batch size."""
    points = []
    for spec in specs:
        for target in targets:
            for batch in batches:
                wl = build_workload(target, spec, _PLOT_WORKLOAD, batch=batch)
                timing = measure(wl.step, sync=wl.sync, budget_s=budget_s)
                points.append({"size": spec.name, "widths": spec.label,
                               "target": target.name, "batch": batch,
                               "samples_per_s": batch / timing.seconds})
    return points


def _figure_class() -> Any:
    """matplotlib's Figure class (no global pyplot state), or an ImportError with the hint."""
    try:
        return importlib.import_module("matplotlib.figure").Figure
    except ImportError as exc:
        msg = f"--plot needs matplotlib ({exc}); {_PLOT_HINT}"
        raise ImportError(msg) from exc


def _plot(points: Sequence[dict[str, Any]], path: Path, figure_class: Any) -> None:
    """Samples/s against batch size, one panel per MLP, one line per target."""
    sizes = list(dict.fromkeys(p["size"] for p in points))
    fig = figure_class(figsize=(5.5 * len(sizes), 4.2), layout="constrained")
    axes = fig.subplots(1, len(sizes), squeeze=False)[0]
    for ax, size in zip(axes, sizes, strict=True):
        mine = [p for p in points if p["size"] == size]
        for target in dict.fromkeys(p["target"] for p in mine):
            line = [p for p in mine if p["target"] == target]
            ax.plot([p["batch"] for p in line], [p["samples_per_s"] for p in line],
                    marker="o", label=target)
        ax.set_xscale("log", base=2)
        batches = sorted({p["batch"] for p in mine})
        ax.set_xticks(batches, labels=[str(b) for b in batches])
        ax.minorticks_off()
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("samples/s (SGD training step)")
        ax.set_title(f"{size} MLP {mine[0]['widths']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.savefig(path)
