"""Report figures fit for a paper, one set per sweep, each as PNG, PDF and SVG (analysis/style.py).

    <sweep>-paired_diff       Int-b minus its FP32 twin, one point per configuration, with the
                              mean's bootstrap 95% CI and a zero line (gap, train loss, test acc)
    <sweep>-loss_curves       median train / test loss per epoch with the interquartile band,
                              one panel per optimizer, one colour per precision
    <sweep>-step_sizes        paper Figure 1: learned LSQ step size per layer (readable layer
                              names), one panel per depth, first / last layers marked
    <sweep>-measures          paper Table 3: each normalised measure per precision
    <sweep>-gap_by_precision  gap of every done trial, box + points per precision
    <sweep>-test_acc_vs_gap   test accuracy against gap, one colour per precision

The data comes from analysis/*.sql over the named views (paired.sql, loss_curves.sql,
step_sizes.sql, gap_points.sql, the `measures` view). Each `fig_*` function takes the rows of
one sweep and returns a matplotlib Figure (tests read its labels); `write_figures` saves them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb

from qgen_sweep.analysis import style
from qgen_sweep.analysis.db import sql_file

Rows = list[dict[str, Any]]
# (column of paired.sql, axis quantity, unit)
PAIRED_PANELS = (
    ("gap_diff", "Δ generalization gap", "nats"),
    ("train_loss_diff", "Δ train loss", "nats"),
    ("test_acc_diff", "Δ test accuracy", "pp"),
)
# Measures of paper Table 3, in its order, with the short name a panel shows.
MEASURES = (
    ("pacbayes_init", "PAC-Bayes init"),
    ("pacbayes_orig", "PAC-Bayes orig"),
    ("pacbayes_mag_init", "PAC-Bayes mag init"),
    ("pacbayes_mag_orig", "PAC-Bayes mag orig"),
    ("sharpness_init", "sharpness init"),
    ("sharpness_orig", "sharpness orig"),
    ("sharpness_mag_init", "sharpness mag init"),
    ("sharpness_mag_orig", "sharpness mag orig"),
)
MAX_LAYER_TICKS = 24  # layer names a step-size panel can show legibly on a 7 in page
MEASURE_UNIT = "√(bound / m)"  # every Table 3 value is normalised as sqrt(x / m) (science.md)


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> Rows:
    result = con.execute(sql)
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def _finite(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _jitter(center: float, count: int, spread: float = 0.18) -> list[float]:
    """Deterministic horizontal offsets for `count` points around `center`."""
    if count <= 1:
        return [center] * count
    return [center - spread + 2 * spread * k / (count - 1) for k in range(count)]


# -- paired differences --------------------------------------------------------------------------


def fig_paired_diff(rows: Rows):
    """One panel per paired metric: every configuration's Int-b minus FP32 difference (points),
    the mean with its bootstrap 95% CI (black bar), and the zero line."""
    from qgen_sweep.analysis.stats import bootstrap_ci

    labels = [p for p in style.present([r["precision"] for r in rows]) if p != "FP32"]
    fig, axes = style.panels(len(PAIRED_PANELS))
    for ax, (column, quantity, unit) in zip(axes, PAIRED_PANELS, strict=True):
        counts = []
        for x, precision in enumerate(labels):
            values = _finite([r[column] for r in rows if r["precision"] == precision])
            counts.append(len(values))
            ax.scatter(_jitter(x, len(values)), values, s=6, alpha=0.55,
                       color=style.color(precision), marker=style.marker(precision), zorder=2)
            if values:
                mean = sum(values) / len(values)
                low, high = bootstrap_ci(values)
                ax.errorbar([x + 0.3], [mean], yerr=[[mean - low], [high - mean]], fmt="o",
                            color="black", capsize=2.5, markersize=3, zorder=3)
        style.zero_line(ax)
        style.precision_ticks(ax, labels, counts)
        ax.set_xlim(-0.6, len(labels) - 0.3)
        ax.set_xlabel("n = configurations paired with FP32")
        ax.set_ylabel(style.label(f"{quantity}, Int-b − FP32", unit))
    fig.suptitle("points: one configuration each; black: mean with 95% bootstrap CI")
    return fig


# -- loss curves ---------------------------------------------------------------------------------


def fig_loss_curves(rows: Rows):
    """One panel per optimizer: median train (solid) and test (dashed) loss per epoch with the
    interquartile band, one colour per precision; integer epochs."""
    from matplotlib.ticker import MaxNLocator

    optimizers = sorted({r["optimizer"] for r in rows})
    fig, axes = style.panels(len(optimizers), sharey=True)
    for ax, optimizer in zip(axes, optimizers, strict=True):
        mine = [r for r in rows if r["optimizer"] == optimizer]
        counts = {}
        for precision in style.present([r["precision"] for r in mine]):
            curve = [r for r in mine if r["precision"] == precision]
            counts[precision] = max(r["n"] for r in curve)
            _curve(ax, curve, "train", precision, f"{precision} train")
            _curve(ax, curve, "test", precision, f"{precision} test")
        ax.set_title(_n_title(optimizer, counts))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel(style.label("cross-entropy loss, median and IQR", "nats"))
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper")
    return fig


def _n_title(name: str, counts: dict[str, int]) -> str:
    """'sgd (n = 8 trials, 2 per precision)', or each precision's n when they differ."""
    total = sum(counts.values())
    if len(set(counts.values())) == 1:
        return f"{name} (n = {total} trials, {next(iter(counts.values()))} per precision)"
    each = ", ".join(f"{p} {n}" for p, n in counts.items())
    return f"{name} (n = {total} trials: {each})"


def _curve(ax, curve: Rows, split: str, precision: str, label: str) -> None:
    points = [r for r in curve if r[f"{split}_loss"] is not None]
    if not points:
        return
    epochs = [r["epoch"] for r in points]
    color = style.color(precision)
    ax.plot(epochs, [r[f"{split}_loss"] for r in points], color=color, label=label,
            linestyle="-" if split == "train" else "--")
    low = [r[f"{split}_loss_q25"] for r in points]
    high = [r[f"{split}_loss_q75"] for r in points]
    ax.fill_between(epochs, low, high, color=color, alpha=0.15, linewidth=0)


# -- step sizes ----------------------------------------------------------------------------------


_NIN_NAME = re.compile(r"^layers\.(\d+)$")
_NIN_POSITIONS = ("3×3", "1×1 a", "1×1 b")  # the three convs of a NiN block (science.md)


def layer_label(name: str, index: int, count: int) -> str:
    """A readable name for quantized layer `index` (1-based) of `count`: NiN's flat module
    names ("layers.3": conv, BN, ReLU per conv) become "block 1 · 1×1 a" / "head 1×1"; other
    architectures' module names ("layer1.0.conv1", "fc") are kept, cut to their last three
    parts."""
    match = _NIN_NAME.match(name)
    if match and int(match.group(1)) % 3 == 0:
        conv = int(match.group(1)) // 3  # 0-based conv number in network order
        if index == count:
            return "head 1×1"
        return f"block {conv // 3 + 1} · {_NIN_POSITIONS[conv % 3]}"
    return ".".join(name.split(".")[-3:])


def fig_step_sizes(rows: Rows):
    """Paper Figure 1: mean ± sd learned step size per layer and precision (log scale), one
    panel per architecture and depth; the first and last layer are shaded and the policy is
    noted."""
    models = sorted({(r["arch"], r["depth"]) for r in rows})
    fig, axes = style.panels(len(models), ncols=min(3, len(models)), width="page",
                             height_per_row=3.0)
    for ax, (arch, depth) in zip(axes, models, strict=True):
        name = f"depth {depth}" if arch == "nin" else arch  # other archs fix their own depth
        _step_panel(ax, [r for r in rows if (r["arch"], r["depth"]) == (arch, depth)], name)
    axes[0].set_ylabel(style.label("learned step size s", "weight units"))
    fig.supxlabel(_first_last_note(rows), fontsize=6, color="#444444")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper")
    fig.suptitle("mean ± sd over the done trials (log scale)")
    return fig


def _step_panel(ax, rows: Rows, name: str) -> None:
    count = max(r["layers"] for r in rows)
    names = {r["layer_index"]: r["layer"] for r in rows}
    order = sorted(names)
    position = {index: k for k, index in enumerate(order)}
    counts: dict[str, int] = {}
    for precision in style.present([r["precision"] for r in rows]):
        mine = sorted((r for r in rows if r["precision"] == precision),
                      key=lambda r: r["layer_index"])
        counts[precision] = max(r["n"] for r in mine)
        ax.errorbar([position[r["layer_index"]] for r in mine],
                    [r["step_size_mean"] for r in mine],
                    yerr=[r["step_size_std"] or 0.0 for r in mine], marker=style.marker(precision),
                    capsize=2, color=style.color(precision), label=precision)
    ax.set_yscale("log")
    labels = [layer_label(names[i], i, count) for i in order]
    every = math.ceil(len(order) / MAX_LAYER_TICKS)  # MobileNet-V2 has 53 quantized layers
    ax.set_xticks(range(0, len(order), every), labels[::every], rotation=55, ha="right",
                  fontsize=6)
    ax.set_xlabel("quantized layer, input → output")
    ax.set_title(_n_title(name, counts))
    for x in (0, len(order) - 1):  # the first and last layer (see the note)
        ax.axvspan(x - 0.4, x + 0.4, color="#999999", alpha=0.15, linewidth=0)


def _first_last_note(rows: Rows) -> str:
    """What the shaded first / last layers mean under the trials' first_last policy."""
    if {r["first_last"] for r in rows} == {"int8"}:
        return "shaded: first and last layer, kept at 8 bits in every quantized model (LSQ)"
    return "shaded: first and last layer (quantized at each model's own bits)"


# -- measures (Table 3) --------------------------------------------------------------------------


def fig_measures(rows: Rows):
    """Paper Table 3 as small multiples: each normalised measure per precision, one point per
    model and the mean ± sd; lower means a tighter bound. None when no measure has a value."""
    shown = [(key, title) for key, title in MEASURES if _finite([r.get(key) for r in rows])]
    if not shown:
        return None
    ncols = min(4, len(shown))
    fig, axes = style.panels(len(shown), ncols=ncols, height_per_row=2.1)
    for ax, (key, title) in zip(axes, shown, strict=True):
        _measure_panel(ax, rows, key, title)
    for ax in axes[::ncols]:
        ax.set_ylabel(style.label("normalised measure", MEASURE_UNIT))
    return fig


def _measure_panel(ax, rows: Rows, key: str, title: str) -> None:
    labels = style.present([r["precision"] for r in rows if _finite([r.get(key)])])
    counts = []
    for x, precision in enumerate(labels):
        values = _finite([r[key] for r in rows if r["precision"] == precision])
        counts.append(len(values))
        ax.scatter(_jitter(x, len(values)), values, s=5, alpha=0.5, color=style.color(precision))
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) \
            if len(values) > 1 else 0.0
        ax.errorbar([x + 0.3], [mean], yerr=[sd], fmt="o", color="black", capsize=2,
                    markersize=3)
    style.precision_ticks(ax, labels, counts)
    ax.set_title(title)


# -- gap ------------------------------------------------------------------------------------------


def fig_gap_by_precision(rows: Rows):
    """Gap of every done trial: box (quartiles) and points per precision."""
    labels = style.present([r["precision"] for r in rows])
    data = [_finite([r["gap"] for r in rows if r["precision"] == p]) for p in labels]
    fig, ax = style.figure()
    ax.boxplot(data, positions=range(len(labels)), showfliers=False, widths=0.5,
               medianprops={"color": "black"})
    for x, (precision, values) in enumerate(zip(labels, data, strict=True)):
        ax.scatter(_jitter(x, len(values)), values, s=5, alpha=0.5, color=style.color(precision),
                   zorder=3)
    style.precision_ticks(ax, labels, [len(v) for v in data], what="trials")
    ax.set_ylabel(style.label("gap, test − train loss", "nats"))
    return fig


def fig_test_acc_vs_gap(rows: Rows):
    """Test accuracy against the gap, one colour per precision (n per precision in the legend)."""
    fig, ax = style.figure()
    for precision in style.present([r["precision"] for r in rows]):
        mine = [r for r in rows if r["precision"] == precision
                and r["gap"] is not None and math.isfinite(r["gap"])]
        ax.scatter([r["gap"] for r in mine], [r["test_acc"] for r in mine], s=6, alpha=0.6,
                   color=style.color(precision), marker=style.marker(precision),
                   label=f"{precision} (n = {len(mine)})")
    ax.set_xlabel(style.label("gap, test − train loss", "nats"))
    ax.set_ylabel(style.label("test accuracy", "%"))
    ax.legend()
    return fig


def _measure_rows(con: duckdb.DuckDBPyConnection) -> Rows:
    views = {row[0] for row in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
    if "measures" not in views:
        return []
    columns = ", ".join(key for key, _ in MEASURES)
    return _rows(con, f"SELECT sweep, bits, precision, {columns} FROM measures "
                      "ORDER BY sweep, precision_order(bits), trial_id")


# name -> (rows of every sweep, figure of one sweep's rows)
FIGURES: dict[str, tuple[Callable[[duckdb.DuckDBPyConnection], Rows], Callable[[Rows], Any]]] = {
    "paired_diff": (lambda con: _rows(con, sql_file("paired.sql").read_text()), fig_paired_diff),
    "loss_curves": (lambda con: _rows(con, sql_file("loss_curves.sql").read_text()),
                    fig_loss_curves),
    "step_sizes": (lambda con: _rows(con, sql_file("step_sizes.sql").read_text()),
                   fig_step_sizes),
    "measures": (_measure_rows, fig_measures),
    "gap_by_precision": (lambda con: _rows(con, sql_file("gap_points.sql").read_text()),
                         fig_gap_by_precision),
    "test_acc_vs_gap": (lambda con: _rows(con, sql_file("gap_points.sql").read_text()),
                        fig_test_acc_vs_gap),
}


def write_figures(con: duckdb.DuckDBPyConnection, out_dir: Path,
                  formats: Sequence[str] = style.FORMATS) -> list[Path]:
    """Write every figure that has data, per sweep, into `out_dir` in each of `formats`;
    return the paths written (figures without data, e.g. measures before `measure`, are skipped)."""
    written: list[Path] = []
    for name, (fetch, draw) in FIGURES.items():
        rows = fetch(con)
        for sweep in dict.fromkeys(r["sweep"] for r in rows):
            fig = draw([r for r in rows if r["sweep"] == sweep])
            if fig is None:  # rows, but nothing to draw (every value NULL)
                continue
            written += style.save(fig, out_dir, f"{sweep}-{name}", formats)
    return written
