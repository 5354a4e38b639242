"""The corruption heatmap: mean gap under corruption, corruption x severity, one panel per
precision on one colour scale, per sweep, dataset and source (analysis/style.py look; PNG, PDF,
SVG).

    <sweep>-robustness_heatmap[-<dataset>][-<source>].png   (dataset / source only when a sweep
                                                            has several)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from qgen_sweep.analysis import style

Rows = list[dict[str, Any]]


def _matrix(rows: Rows, precision: str, corruptions: list[str], severities: list[int]):
    cells = {(r["corruption"], r["severity"]): r[precision] for r in rows}
    return [[cells.get((c, s)) if cells.get((c, s)) is not None else math.nan
             for s in severities] for c in corruptions]


def fig_heatmap(rows: Rows, title: str):
    """Panels FP32, Int8, Int4, Int2 (those present): the mean gap (nats) of each corruption
    (rows, benchmark order) and severity (columns); n models per panel in its title."""
    import numpy as np

    precisions = [p for p in style.PRECISIONS if any(r.get(p) is not None for r in rows)]
    if not precisions:
        return None
    corruptions = list(dict.fromkeys(r["corruption"] for r in rows))
    severities = sorted({r["severity"] for r in rows})
    matrices = [np.array(_matrix(rows, p, corruptions, severities)) for p in precisions]
    finite = np.concatenate([m[np.isfinite(m)] for m in matrices])
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    height = 0.9 + 0.17 * len(corruptions)
    fig, axes = style.panels(len(precisions), height_per_row=height, sharey=True)
    for ax, precision, matrix in zip(axes, precisions, matrices, strict=True):
        image = ax.imshow(matrix, vmin=low, vmax=high, cmap="viridis", aspect="auto")
        n = max(r[f"n_{precision.lower()}"] for r in rows)
        ax.set_title(f"{precision} ({style.n_text(n, 'models')})")
        ax.set_xticks(range(len(severities)), [str(s) for s in severities])
        ax.set_xlabel("severity")
        ax.set_yticks(range(len(corruptions)), [c.replace("_", " ") for c in corruptions])
        ax.grid(False)
    axes[0].set_ylabel("corruption")
    bar = fig.colorbar(image, ax=axes, shrink=0.9, pad=0.02)
    bar.set_label(style.label("gap under corruption", "nats"))
    fig.suptitle(title)
    return fig


def write_heatmaps(con: duckdb.DuckDBPyConnection, out_dir: Path,
                   formats: Sequence[str] = style.FORMATS) -> list[Path]:
    """One heatmap per sweep, dataset and source; the paths written."""
    from qgen_sweep.analysis.report import fetch_rows

    rows = fetch_rows(con, "SELECT * FROM robustness_table4")
    groups = list(dict.fromkeys((r["sweep"], r["dataset"], r["source"]) for r in rows))
    written: list[Path] = []
    for sweep, dataset, source in groups:
        mine = [r for r in rows if (r["sweep"], r["dataset"], r["source"]) == (sweep, dataset,
                                                                              source)]
        title = (f"{sweep}: gap under corruption (corrupted test loss - clean train loss), "
                 f"{dataset}, {source}")
        fig = fig_heatmap(mine, title)
        if fig is None:
            continue
        same_sweep = [g for g in groups if g[0] == sweep]
        stem = f"{sweep}-robustness_heatmap"
        if len({g[1] for g in same_sweep}) > 1:
            stem += f"-{dataset}"
        if len({g[2] for g in same_sweep}) > 1:
            stem += f"-{source}"
        written += style.save(fig, out_dir, stem, formats)
    return written
