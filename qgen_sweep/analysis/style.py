"""One look for every figure qgen-sweep writes, and one way to save them (PNG, PDF and SVG).

Any module that draws a figure (report figures, corruption heatmaps, loss landscapes) uses:

    plt = style.pyplot()                      # headless Agg backend + the shared rcParams
    fig, ax = style.figure(width="column")    # 3.5 in wide (one journal column) or "page"
    ax.set_ylabel(style.label("generalization gap", "nats"))
    style.precision_ticks(ax, ["FP32", "Int4"], counts=[243, 243])   # "FP32\\nn = 243"
    paths = style.save(fig, out_dir, "smoke-gap")  # smoke-gap.png/.pdf/.svg; closes the figure

Conventions: every axis names its quantity and unit ("(nats)", "(%)", "(pp)" for percentage
points); the number of models behind a mark (n) is on the axis, in the tick labels, or in the
legend. SVG keeps its text as <text> elements (svg.fonttype = none), so the labels stay editable
in a vector editor and tests can read them back; PDF embeds TrueType fonts (type 42), which
journals accept. Saved files carry no creation date, so the same data gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

FORMATS = ("png", "pdf", "svg")
PRECISIONS = ("FP32", "Int8", "Int4", "Int2")  # the paper's order
# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies and in grey.
COLORS = {"FP32": "#000000", "Int8": "#0072B2", "Int4": "#E69F00", "Int2": "#D55E00"}
MARKERS = {"FP32": "o", "Int8": "s", "Int4": "^", "Int2": "D"}
WIDTHS = {"column": 3.5, "page": 7.0}  # inches: one column / full page of a two-column paper
DPI = 300  # PNG resolution for print
UNITS = {"loss": "nats", "gap": "nats", "accuracy": "%", "accuracy difference": "pp"}

RC: dict[str, Any] = {
    "font.family": "DejaVu Sans",  # ships with matplotlib: the same glyphs on every machine
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "savefig.dpi": DPI,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.03,
    "svg.fonttype": "none",
    "svg.hashsalt": "qgen-sweep",  # stable element ids: same data, same SVG bytes
    "pdf.fonttype": 42,
    "figure.constrained_layout.use": True,
}
_METADATA = {"pdf": {"CreationDate": None}, "svg": {"Date": None}, "png": {}}


def pyplot():
    """matplotlib.pyplot on the headless Agg backend with the shared style applied."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on cluster nodes or CI
    import matplotlib.pyplot as plt

    matplotlib.rcParams.update(RC)
    return plt


def figure(ncols: int = 1, nrows: int = 1, width: str | float = "column",
           height: float | None = None, **kwargs: Any):
    """(fig, axes) sized for a paper: `width` "column" (3.5 in), "page" (7 in) or inches;
    the height defaults to 2.6 in per row. `axes` as plt.subplots gives it (one Axes for 1 x 1)."""
    plt = pyplot()
    inches = WIDTHS[width] if isinstance(width, str) else float(width)
    size = (inches, height if height is not None else 2.6 * nrows)
    return plt.subplots(nrows, ncols, figsize=size, **kwargs)


def panels(count: int, ncols: int | None = None, width: str | float | None = None,
           height_per_row: float = 2.6, **kwargs: Any):
    """(fig, [Axes] * count): `count` panels in rows of `ncols` (default: all in one row);
    unused cells of the last row are hidden. Width: one column for one panel, else the page."""
    ncols = max(1, min(count, ncols or count))
    nrows = max(1, -(-count // ncols))
    if width is None:
        width = "column" if ncols == 1 else "page"
    fig, grid = figure(ncols, nrows, width, height_per_row * nrows, squeeze=False, **kwargs)
    flat = [ax for row in grid for ax in row]
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def label(quantity: str, unit: str | None = None, n: int | None = None) -> str:
    """Axis label with its unit and, when given, the number of models: 'gap (nats), n = 243'."""
    text = quantity if unit is None else f"{quantity} ({unit})"
    return text if n is None else f"{text}, n = {n}"


def n_text(n: int, what: str = "") -> str:
    """'n = 243' or 'n = 243 pairs'."""
    return f"n = {n}" + (f" {what}" if what else "")


def present(precisions: Sequence[str]) -> list[str]:
    """The given precision labels in the paper's order (FP32, Int8, Int4, Int2)."""
    seen = set(precisions)
    return [p for p in PRECISIONS if p in seen] + sorted(seen - set(PRECISIONS))


def color(precision: str) -> str:
    return COLORS.get(precision, "#666666")


def marker(precision: str) -> str:
    return MARKERS.get(precision, "o")


def precision_ticks(ax, labels: Sequence[str], counts: Sequence[int], what: str = "",
                    positions: Sequence[float] | None = None) -> None:
    """Category ticks 'Int4\\nn = 27' at 0, 1, ... (or `positions`)."""
    where = list(range(len(labels))) if positions is None else list(positions)
    ax.set_xticks(where, [f"{p}\n{n_text(n, what)}" for p, n in zip(labels, counts, strict=True)])


def zero_line(ax) -> None:
    """The y = 0 reference line of a difference plot."""
    ax.axhline(0.0, color="#444444", linewidth=0.8, linestyle="--", zorder=1)


def save(fig, out_dir: Path | str, stem: str, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write `fig` as out_dir/stem.<format> for each format; close it; return the paths."""
    plt = pyplot()
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        from qgen_sweep.errors import UsageError

        raise UsageError(f"figure formats must be among {', '.join(FORMATS)}, but got "
                         f"{','.join(unknown)} (e.g. --plot-formats png,svg)")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    try:
        for fmt in formats:
            path = folder / f"{stem}.{fmt}"
            fig.savefig(path, format=fmt, metadata=_METADATA[fmt])
            paths.append(path)
    finally:
        plt.close(fig)
    return paths


def figure_texts(fig) -> list[str]:
    """Every text a figure shows (titles, axis labels, tick labels, legend entries, notes), in
    drawing order: what a test asserts on, without rendering."""
    fig.canvas.draw()  # tick labels exist only once the figure is laid out
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))
            if t.get_text() and t.get_visible()]


def svg_texts(path: Path | str) -> list[str]:
    """The texts of an SVG written by `save` (one entry per <text> element, lines joined)."""
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    texts = []
    for element in root.iter("{http://www.w3.org/2000/svg}text"):
        text = " ".join(part.strip() for part in element.itertext() if part.strip())
        if text:
            texts.append(text)
    return texts
