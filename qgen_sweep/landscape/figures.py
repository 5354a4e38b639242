"""Landscape figures from the landscape views, in the shared style (qgen_sweep.analysis.style:
PNG, PDF and SVG by default).

    <sweep>-landscape-<trial_id>-<precision>.<fmt>      one trial: 3D surface and contour map
                                                        (or the 1D slice)
    <sweep>-landscape-panel-<fp32_id>.<fmt>             the paper's Figure 2: FP32, Int8, Int4,
                                                        Int2 of one configuration side by side,
                                                        same axes and same colour scale
    <sweep>-landscape-lines-<fp32_id>.<fmt>             the interpolations of one configuration:
                                                        initialisation -> kept model per
                                                        precision, FP32 twin -> Int-b

A configuration is named by its FP32 twin's trial id (every precision of it shares that id in
`twin_id`, the FP32 trial is it). Loss = mean cross-entropy over the n training examples (nats).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb

from qgen_sweep.analysis import style

ORDER = style.PRECISIONS
CMAP = "viridis"
A_LABEL = "a (direction 1, filter-normalized)"
B_LABEL = "b (direction 2, filter-normalized)"
LOSS_LABEL = "training loss (nats)"


def _fetch(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict]:
    cursor = con.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _grid(points: list[dict]) -> tuple[Any, Any, Any]:
    """(A, B, L) 2D arrays of a 2D surface's points (rows j, columns i)."""
    import numpy as np

    ii = sorted({p["i"] for p in points})
    jj = sorted({p["j"] for p in points})
    loss = np.full((len(jj), len(ii)), np.nan)
    a = np.zeros((len(jj), len(ii)))
    b = np.zeros((len(jj), len(ii)))
    col = {i: k for k, i in enumerate(ii)}
    row = {j: k for k, j in enumerate(jj)}
    for p in points:
        r, c = row[p["j"]], col[p["i"]]
        loss[r, c], a[r, c], b[r, c] = p["loss"], p["a"], p["b"]
    return a, b, loss


def _finite_range(values: Iterable[float]) -> tuple[float, float]:
    """(min, max) of the finite positive losses (log scales need > 0)."""
    finite = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if not finite:
        return 1e-3, 1.0
    low, high = min(finite), max(finite)
    return (low, high) if high > low * (1 + 1e-9) else (low, low * 1.001)


def _draw_3d(ax: Any, points: list[dict], vmin: float, vmax: float) -> None:
    """log10(loss) over (a, b): the basin and the walls both stay visible."""
    import numpy as np

    a, b, loss = _grid(points)
    low, high = math.log10(vmin), math.log10(vmax)
    ax.plot_surface(a, b, np.log10(loss), cmap=CMAP, vmin=low, vmax=high, linewidth=0,
                    antialiased=True)
    ax.set_zlim(low, high)
    ax.set_xlabel("a", labelpad=-4, fontsize=8)
    ax.set_ylabel("b", labelpad=-4, fontsize=8)
    ax.set_zlabel("log10 loss (nats)", labelpad=-2, fontsize=8)
    ax.tick_params(labelsize=6, pad=-1)


def _draw_contour(ax: Any, points: list[dict], levels: Any) -> Any:
    from matplotlib.colors import LogNorm

    a, b, loss = _grid(points)
    norm = LogNorm(vmin=levels[0], vmax=levels[-1])
    filled = ax.contourf(a, b, loss, levels=levels, cmap=CMAP, norm=norm)
    ax.contour(a, b, loss, levels=levels[::2], colors="white", linewidths=0.4, alpha=0.6)
    ax.plot([0], [0], marker="*", color="red", markersize=9, linestyle="none",
            label="kept model")
    ax.set_aspect("equal")
    ax.set_xlabel(A_LABEL, fontsize=8)
    ax.set_ylabel(B_LABEL, fontsize=8)
    ax.tick_params(labelsize=7)
    return filled


def _levels(vmin: float, vmax: float, count: int = 21) -> Any:
    """Log-spaced contour levels (the loss spans decades between the minimum and the edges)."""
    import numpy as np

    return np.geomspace(vmin, vmax, count)


def _colorbar(fig: Any, filled: Any, **where: Any) -> None:
    bar = fig.colorbar(filled, label=LOSS_LABEL + ", log scale", **where)
    bar.set_ticks(filled.levels[::4], labels=[f"{v:.3g}" for v in filled.levels[::4]])
    bar.minorticks_off()
    bar.ax.tick_params(labelsize=7)


def _describe(trial: dict[str, Any]) -> str:
    return (f"{trial['dataset']}, {trial['optimizer']} lr={trial['lr']:g} "
            f"wd={trial['weight_decay']:g}, depth {trial['depth']} x width {trial['width']}")


def curve_points(con: duckdb.DuckDBPyConnection, landscape_id: str, trial_ids: list[str],
                    kind: str = "surface") -> dict[str, list[dict]]:
    rows = _fetch(con, "SELECT trial_id, i, j, a, b, loss, accuracy FROM landscape_points "
                       "WHERE landscape_id = ? AND kind = ? AND list_contains(?, trial_id) "
                       "ORDER BY trial_id, j, i", [landscape_id, kind, trial_ids])
    out: dict[str, list[dict]] = {t: [] for t in trial_ids}
    for row in rows:
        out[row["trial_id"]].append(row)
    return out


def _n_examples(trial: dict[str, Any]) -> str:
    return f"n = {trial['n']:,} training examples" if trial.get("n") else "training split"


def trial_figure(trial: dict[str, Any], points: list[dict], out_dir: Path, stem: str,
                 formats: tuple[str, ...] = style.FORMATS) -> list[Path]:
    """One trial's surface: 3D view and contour map (2D), or loss and accuracy along a (1D)."""
    plt = style.pyplot()
    title = (f"{trial['sweep']}: {trial['precision']} {trial['trial_id']} "
             f"({_describe(trial)})\nloss at the kept model {trial['loss_centre']:.3f} nats, "
             f"{_n_examples(trial)}")
    if trial["dims"] == 1:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        _draw_line(ax, points, trial["precision"], accuracy=True)
        ax.set_xlabel(A_LABEL)
    else:
        vmin, vmax = _finite_range(p["loss"] for p in points)
        fig = plt.figure(figsize=(11, 4.8))
        _draw_3d(fig.add_subplot(1, 2, 1, projection="3d"), points, vmin, vmax)
        ax = fig.add_subplot(1, 2, 2)
        filled = _draw_contour(ax, points, _levels(vmin, vmax))
        _colorbar(fig, filled, ax=ax, shrink=0.9)
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=9)
    return style.save(fig, out_dir, stem, formats)


def _draw_line(ax: Any, points: list[dict], label: str, accuracy: bool = False) -> None:
    xs = [p["a"] for p in points]
    ax.plot(xs, [p["loss"] for p in points], color=style.color(label), label=label)
    ax.set_ylabel(LOSS_LABEL)
    if accuracy:
        twin = ax.twinx()
        twin.plot(xs, [100 * p["accuracy"] for p in points], color="grey", linestyle="--",
                  label="training accuracy")
        twin.set_ylabel("training accuracy (%)")
        twin.legend(fontsize=7, loc="upper right")
    ax.legend(fontsize=7, loc="upper left")


def panel_figure(config: list[dict[str, Any]], points: dict[str, list[dict]],
                 out_dir: Path, stem: str,
                 formats: tuple[str, ...] = style.FORMATS) -> list[Path]:
    """The paper's Figure 2 for one configuration: a column per precision (FP32, Int8, Int4,
    Int2 as present), 3D surfaces above contour maps, one shared loss scale for all."""
    plt = style.pyplot()
    columns = sorted(config, key=lambda t: ORDER.index(t["precision"]))
    vmin, vmax = _finite_range(p["loss"] for t in columns for p in points[t["trial_id"]])
    levels = _levels(vmin, vmax)
    fig = plt.figure(figsize=(3.4 * len(columns) + 1.2, 7.2))
    grid = fig.add_gridspec(2, len(columns) + 1, width_ratios=[1] * len(columns) + [0.06])
    filled = None
    for k, trial in enumerate(columns):
        mine = points[trial["trial_id"]]
        ax3 = fig.add_subplot(grid[0, k], projection="3d")
        _draw_3d(ax3, mine, vmin, vmax)
        ax3.set_title(f"{trial['precision']}  (centre {trial['loss_centre']:.3f} nats)",
                      fontsize=9)
        ax = fig.add_subplot(grid[1, k])
        filled = _draw_contour(ax, mine, levels)
        ax.set_title(f"{trial['precision']}: mean rise within r={trial['radius']:g}: "
                     f"{trial['loss_rise']:.3f} nats", fontsize=8)
    _colorbar(fig, filled, cax=fig.add_subplot(grid[1, -1]))
    first = columns[0]
    fig.suptitle(f"{first['sweep']}: loss landscape per precision, {_describe(first)}\n"
                 f"{_n_examples(first)}; the same direction seed, axes and colour scale in "
                 "every panel", fontsize=9)
    return style.save(fig, out_dir, stem, formats)


def lines_figure(config: list[dict[str, Any]], init: dict[str, list[dict]],
                 twin: dict[str, list[dict]], out_dir: Path, stem: str,
                 formats: tuple[str, ...] = style.FORMATS) -> list[Path]:
    """Interpolations of one configuration: initialisation -> kept model (every precision) and
    FP32 twin -> Int-b (every quantized precision), training loss along the line."""
    plt = style.pyplot()
    columns = sorted(config, key=lambda t: ORDER.index(t["precision"]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.3))
    for trial in columns:
        if init.get(trial["trial_id"]):
            _draw_line(left, init[trial["trial_id"]], trial["precision"])
        if twin.get(trial["trial_id"]):
            _draw_line(right, twin[trial["trial_id"]], trial["precision"])
    left.set(xlabel="a (0 = weights at initialisation, 1 = kept model)",
             title="initialisation -> kept model")
    right.set(xlabel="a (0 = FP32 twin, 1 = Int-b model, dequantized weights)",
              title="FP32 twin -> quantized model")
    for ax in (left, right):
        ax.axvline(0, color="grey", linewidth=0.5)
        ax.axvline(1, color="grey", linewidth=0.5)
    first = columns[0]
    fig.suptitle(f"{first['sweep']}: linear interpolations ({_describe(first)}; "
                 f"{_n_examples(first)})", fontsize=9)
    return style.save(fig, out_dir, stem, formats)
