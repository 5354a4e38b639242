"""Report figures as PNG files (matplotlib, headless Agg backend), one set per sweep.

    <sweep>-gap_by_precision.png   gap of every done trial, box + points per precision
    <sweep>-loss_curves.png        mean train / test loss per epoch per precision
    <sweep>-test_acc_vs_gap.png    test accuracy against gap, one colour per precision
    <sweep>-step_sizes.png         paper Figure 1: learned LSQ step size per layer per precision

The data comes from analysis/gap_points.sql, loss_curves.sql and step_sizes.sql.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from qgen_sweep.analysis.db import sql_file

ORDER = ("FP32", "Int8", "Int4", "Int2")
COLORS = {"FP32": "#1f77b4", "Int8": "#2ca02c", "Int4": "#ff7f0e", "Int2": "#d62728"}
DPI = 120


def _rows(con: duckdb.DuckDBPyConnection, name: str) -> list[dict[str, Any]]:
    result = con.execute(sql_file(name).read_text())
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on cluster nodes or CI
    import matplotlib.pyplot as plt

    return plt


def _present(rows: list[dict[str, Any]]) -> list[str]:
    seen = {r["precision"] for r in rows}
    return [p for p in ORDER if p in seen]


def _gap_by_precision(ax, rows: list[dict[str, Any]]) -> None:
    labels = _present(rows)
    data = [[r["gap"] for r in rows if r["precision"] == p] for p in labels]
    ax.boxplot(data, tick_labels=labels, showfliers=False)
    for i, values in enumerate(data, start=1):
        jitter = [i + 0.08 * ((k % 7) - 3) / 3 for k in range(len(values))]
        ax.scatter(jitter, values, s=8, alpha=0.5, color=COLORS[labels[i - 1]])
    ax.set(xlabel="precision", ylabel="generalization gap (test - train loss)")


def _loss_curves(ax, rows: list[dict[str, Any]]) -> None:
    for p in _present(rows):
        mine = [r for r in rows if r["precision"] == p]
        epochs = [r["epoch"] for r in mine]
        ax.plot(epochs, [r["train_loss"] for r in mine], color=COLORS[p], label=f"{p} train")
        test = [(r["epoch"], r["test_loss"]) for r in mine if r["test_loss"] is not None]
        if test:
            ax.plot(*zip(*test, strict=True), color=COLORS[p], linestyle="--", label=f"{p} test")
    ax.set(xlabel="epoch", ylabel="mean loss (cross-entropy)")
    ax.legend(fontsize=7)


def _acc_vs_gap(ax, rows: list[dict[str, Any]]) -> None:
    for p in _present(rows):
        mine = [r for r in rows if r["precision"] == p]
        ax.scatter(
            [r["gap"] for r in mine],
            [r["test_acc"] for r in mine],
            s=10,
            alpha=0.6,
            color=COLORS[p],
            label=p,
        )
    ax.set(xlabel="generalization gap (test - train loss)", ylabel="test accuracy (%)")
    ax.legend(fontsize=7)


def _step_sizes(ax, rows: list[dict[str, Any]]) -> None:
    first: dict[str, int] = {}
    for r in rows:
        first[r["layer"]] = min(first.get(r["layer"], r["layer_index"]), r["layer_index"])
    position = {name: i for i, name in enumerate(sorted(first, key=lambda n: (first[n], n)))}
    for p in _present(rows):
        mine = [r for r in rows if r["precision"] == p]
        x = [position[r["layer"]] for r in mine]
        ax.errorbar(
            x,
            [r["step_size_mean"] for r in mine],
            yerr=[r["step_size_std"] or 0.0 for r in mine],
            marker="o",
            capsize=2,
            color=COLORS[p],
            label=p,
        )
    ax.set_xticks(range(len(position)), list(position), rotation=60, fontsize=6, ha="right")
    ax.set(ylabel="learned step size s", yscale="log")
    ax.legend(fontsize=7)


FIGURES: dict[str, tuple[str, Callable, str]] = {
    "gap_by_precision": ("gap_points.sql", _gap_by_precision, "Generalization gap by precision"),
    "loss_curves": ("loss_curves.sql", _loss_curves, "Mean loss per epoch"),
    "test_acc_vs_gap": ("gap_points.sql", _acc_vs_gap, "Test accuracy vs gap"),
    "step_sizes": ("step_sizes.sql", _step_sizes, "Learned LSQ step size per layer"),
}


def write_figures(con: duckdb.DuckDBPyConnection, out_dir: Path) -> list[Path]:
    """Write every figure that has data, per sweep, into `out_dir`; return the paths written."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (sql, draw, title) in FIGURES.items():
        rows = _rows(con, sql)
        for sweep in dict.fromkeys(r["sweep"] for r in rows):
            fig, ax = plt.subplots(figsize=(7, 4.5))
            try:
                draw(ax, [r for r in rows if r["sweep"] == sweep])
                ax.set_title(f"{sweep}: {title}")
                fig.tight_layout()
                path = out_dir / f"{sweep}-{name}.png"
                fig.savefig(path, dpi=DPI)
                written.append(path)
            finally:
                plt.close(fig)
    return written
