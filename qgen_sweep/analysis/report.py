"""The per-precision generalization report: paper Tables 1 and 2, paired statistics, figures.

Aggregates come from the SQL files in analysis/ (table1.sql, paired.sql, paired_summary.sql,
table2.sql, progress.sql); the bootstrap intervals and Wilcoxon p-values are computed in Python
(stats.py) over the pairs paired.sql returns. `build_report` returns plain rows; `render` turns
them into markdown, CSV or JSON.

Sections after Tables 1 and 2 plug in: each entry of SECTION_PROVIDERS returns its `Section`s
(key, title, rows) and the figures it wrote, and the renderers print them in that order. A new
kind of result adds one provider line here and nothing else.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from qgen_sweep.analysis import stats
from qgen_sweep.analysis.db import connect, sql_file
from qgen_sweep.collapse import ACC_FACTOR, LOSS_FACTOR
from qgen_sweep.errors import StoreError

FORMATS = ("markdown", "csv", "json")
# Paired metrics: (key in the report, column of paired.sql, unit)
PAIRED_METRICS = (
    ("gap", "gap_diff", "nats"),
    ("train_loss", "train_loss_diff", "nats"),
    ("test_acc", "test_acc_diff", "percentage points"),
)
COLLAPSED_RULE = (
    f"a finished trial is collapsed when its final training accuracy is at most {ACC_FACTOR:g} x "
    f"chance (1 / classes) or its final training loss is above {LOSS_FACTOR:g} x ln(classes) "
    "nats (the loss of a uniform prediction)"
)
UNITS = {
    "train_acc": "percent",
    "test_acc": "percent",
    "train_loss": "nats (cross-entropy)",
    "test_loss": "nats (cross-entropy)",
    "gap": "nats (test loss - train loss)",
    "l2_norm": "L2 norm of all conv weights",
    "paired": "Int-b minus its FP32 twin; test_acc in percentage points",
}


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    result = con.execute(sql)
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def _sql(name: str) -> str:
    return sql_file(name).read_text()


def check_unique_trials(con: duckdb.DuckDBPyConnection) -> None:
    """A StoreError when a trial id has more than one final row in one store: paired statistics
    assume each model once (a copied trial file would count its pairs twice)."""
    found = con.execute(
        "SELECT t.sweep, t.trial_id, count(*) AS n, any_value(s.path) FROM trials AS t "
        "LEFT JOIN stores AS s USING (sweep) GROUP BY ALL HAVING count(*) > 1 "
        "ORDER BY t.sweep, t.trial_id LIMIT 1"
    ).fetchall()
    if found:
        sweep, trial_id, n, path = found[0]
        raise StoreError(
            f"trial {trial_id} has {n} final rows in {sweep} ({path}): it appears {n} times, and "
            f"paired statistics need each trial once; remove the extra copies from "
            f"{path}/trials/ (qgen-sweep query \"SELECT * FROM trials WHERE trial_id = "
            f"'{trial_id}'\" shows them)"
        )


def paired_rows(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """One row per sweep, dataset, Int-b and metric: pairs, mean difference, 95% CI, p-value."""
    check_unique_trials(con)
    pairs = _rows(con, _sql("paired.sql"))
    summaries = _rows(con, _sql("paired_summary.sql").replace("{paired}", _sql("paired.sql")))
    out = []
    for summary in summaries:
        key = (summary["sweep"], summary["dataset"], summary["bits"])
        group = [p for p in pairs if (p["sweep"], p["dataset"], p["bits"]) == key]
        for metric, column, unit in PAIRED_METRICS:
            diffs = [p[column] for p in group]
            out.append(
                {
                    "sweep": summary["sweep"],
                    "dataset": summary["dataset"],
                    "bits": summary["bits"],
                    "precision": summary["precision"],
                    "metric": metric,
                    "unit": unit,
                    "n_pairs": summary["n_pairs"],
                    "mean_diff": summary[column],
                    **stats.paired_summary(diffs),
                }
            )
    return out


def _collapsed_included(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether this connection shows collapsed trials as 'done' (report --include-collapsed)."""
    return con.execute("SELECT collapsed_status() = 'done'").fetchall()[0][0]


@dataclass(frozen=True)
class Section:
    """One report section a provider adds: its key in the report object (and CSV block), its
    markdown heading, and its rows. `statistics`: its numbers are over done trials, so its
    heading says how collapsed trials are counted."""

    key: str
    title: str
    rows: list[dict[str, Any]]
    statistics: bool = False
    # "module:function" turning the rows into markdown lines, for a section that is not one
    # plain table (robustness: a table per dataset and source, marked cells); None: the plain one
    render: str | None = None


Provider = Callable[[duckdb.DuckDBPyConnection, Path, Path | None, tuple[str, ...]],
                    tuple[list[Section], list]]
# The sections after Tables 1 and 2, in report order: "module:function", each called as
# function(con, results_dir, plots_dir, formats) -> (sections, figure paths it wrote into
# plots_dir in those formats; none when plots_dir is None).
SECTION_PROVIDERS = (
    "qgen_sweep.measures.report:sections",
    "qgen_sweep.adaptive.report:sections",
    "qgen_sweep.landscape.report:sections",
    "qgen_sweep.robustness.report:sections",
)


def _views(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {row[0] for row in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}


def _provider(name: str) -> Provider:
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


def build_report(
    results_dir: Path | str,
    plots_dir: Path | str | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    plot_formats: Iterable[str] = ("png", "pdf", "svg"),
    include_collapsed: bool = False,
) -> dict[str, Any]:
    """Every section of the report as lists of rows keyed by column name (bits as 2/4/8/32).

    Keys: progress, table1, paired, table2, units, collapsed (the rule, whether collapsed trials
    are in the statistics, and how many there are per sweep); then each provider's sections by
    key (e.g. table3, kendall when measures exist), listed in order under `sections`; plots, the
    written figure paths in each of `plot_formats`, when `plots_dir` is given. Collapsed trials
    (qgen_sweep.collapse) are left out of every mean and paired statistic unless
    `include_collapsed` (ignored when a connection `con` is given: it was made with its own).
    """
    if con is None:
        kinds = ["plan", "trials", "failures", "measures", "landscape", "robustness"]
        con = connect(results_dir, kinds + (["epochs"] if plots_dir else []),
                      include_collapsed=include_collapsed)
    progress = _rows(con, _sql("progress.sql"))
    report: dict[str, Any] = {
        "stores": _rows(con, "SELECT * FROM stores ORDER BY sweep"),
        "progress": progress,
        "table1": _rows(con, _sql("table1.sql")),
        "paired": paired_rows(con),
        "table2": _rows(con, _sql("table2.sql")),
        "units": UNITS,
        "collapsed": {
            "rule": COLLAPSED_RULE,
            "included": _collapsed_included(con),
            "by_sweep": {row["sweep"]: row["collapsed"] for row in progress},
        },
        "sections": [],
    }
    plots = Path(plots_dir) if plots_dir is not None else None
    formats = tuple(plot_formats)
    figures: list[Path] = []
    if plots is not None:
        from qgen_sweep.analysis.plots import write_figures

        figures += write_figures(con, plots, formats)
    for name in SECTION_PROVIDERS:
        found, paths = _provider(name)(con, Path(results_dir), plots, formats)
        for section in found:
            report[section.key] = section.rows
            report["sections"].append({"key": section.key, "title": section.title,
                                       "statistics": section.statistics,
                                       "render": section.render})
        figures += paths
    if plots is not None:
        report["plots"] = [str(p) for p in figures]
    return report


# -- rendering -----------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """JSON-safe value: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _num(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _pm(mean: Any, std: Any, digits: int) -> str:
    if mean is None:
        return "-"
    if std is None:  # a single model: no standard deviation
        return _num(mean, digits)
    return f"{_num(mean, digits)} ± {_num(std, digits)}"


def _p(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.2e}" if value < 1e-3 else f"{value:.4f}"


def _md_table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def progress_line(row: dict[str, Any]) -> str:
    """'smoke: 10 of 12 trials finished (done 9, collapsed 0, diverged 1, failed 1, pending 1)'."""
    return (
        f"{row['sweep']}: {row['finished']} of {row['planned']} trials finished "
        f"(done {row['done']}, collapsed {row['collapsed']}, diverged {row['diverged']}, "
        f"failed {row['failed']}, pending {row['pending']})"
    )


def collapsed_note(report: dict[str, Any], sweep: str | None = None) -> str:
    """The collapsed-trial count for a table heading: how many, and whether they are in it."""
    counts = report["collapsed"]["by_sweep"]
    count = counts.get(sweep, 0) if sweep is not None else sum(counts.values())
    if count == 0:
        return "no collapsed trials"
    if report["collapsed"]["included"]:
        return f"{count} collapsed trial{'s' if count != 1 else ''} included"
    return (f"{count} collapsed trial{'s' if count != 1 else ''} excluded "
            "(report --include-collapsed keeps them)")


def _md_table1(rows: list[dict[str, Any]]) -> list[str]:
    header = ["precision", "n", "collapsed", "diverged", "failed", "train acc %", "test acc %"]
    header += ["train loss", "test loss", "gap", "gap median"]
    body = [
        [r["precision"], str(r["n"]), str(r["collapsed"]), str(r["diverged"]), str(r["failed"])]
        + [_pm(r[f"{m}_mean"], r[f"{m}_std"], 2) for m in ("train_acc", "test_acc")]
        + [_pm(r[f"{m}_mean"], r[f"{m}_std"], 3) for m in ("train_loss", "test_loss", "gap")]
        + [_num(r["gap_median"], 3)]
        for r in rows
    ]
    return _md_table(header, body)


def _md_paired(rows: list[dict[str, Any]]) -> list[str]:
    header = ["precision", "metric", "pairs", "mean diff", "95% CI", "median diff", "Wilcoxon p"]
    body = [
        [
            r["precision"],
            r["metric"] + (" (pp)" if r["metric"] == "test_acc" else ""),
            str(r["n_pairs"]),
            _num(r["mean_diff"], 4),
            f"[{_num(r['ci_low'], 4)}, {_num(r['ci_high'], 4)}]",
            _num(r["median_diff"], 4),
            _p(r["p_value"]),
        ]
        for r in rows
    ]
    return _md_table(header, body)


def _md_table2(rows: list[dict[str, Any]]) -> list[str]:
    """One row per arch (all its models), then per depth x width where an arch has several."""
    precisions = list(dict.fromkeys(r["precision"] for r in rows))
    shapes: dict[str, set] = {}
    for r in rows:
        if r["depth"] is not None:
            shapes.setdefault(r["arch"], set()).add((r["depth"], r["width"]))
    cells: dict[tuple, dict[str, str]] = {}
    for r in rows:
        if r["depth"] is not None and len(shapes.get(r["arch"], ())) < 2:
            continue  # one shape only (a backbone): its "all" row says it
        key = (r["arch"],) if r["depth"] is None else (r["arch"], r["depth"], r["width"])
        cells.setdefault(key, {})[r["precision"]] = _pm(r["l2_norm_mean"], r["l2_norm_std"], 2)
    body = [
        [key[0] if len(key) == 1 else f"{key[0]} depth {key[1]} x width {key[2]}"]
        + [values.get(p, "-") for p in precisions]
        for key, values in cells.items()
    ]
    return _md_table(["models", *precisions], body)


# For section providers: the same row fetching, numbers and tables as the built-in sections.
fetch_rows, md_table, num, p_text = _rows, _md_table, _num, _p


def _md_generic(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["(no rows)"]
    header = list(rows[0])
    body = [[_num(v, 4) if isinstance(v, float) or v is None else str(v) for v in r.values()]
            for r in rows]  # None (not measured, undefined) shows as "-", like the core tables
    return _md_table(header, body)


def _by_sweep(rows: list[dict[str, Any]], sweep: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["sweep"] == sweep]


def to_markdown(report: dict[str, Any]) -> str:
    """Human-readable report: per sweep, its progress line, Table 1, paired stats, Table 2."""
    lines: list[str] = []
    for progress in report["progress"]:
        sweep = progress["sweep"]
        datasets = sorted({r["dataset"] for r in _by_sweep(report["table1"], sweep)})
        lines += [f"# {sweep} ({', '.join(datasets) or 'no trials yet'})", ""]
        lines += [f"store: {s['path']} (spec hash {s['spec_hash'] or 'unknown'})"
                  for s in report.get("stores", []) if s["sweep"] == sweep]
        lines.append(progress_line(progress))
        note = collapsed_note(report, sweep)
        lines += ["", "## Table 1: final metrics per precision "
                  f"(mean ± sd over done trials, and the median gap; {note})", ""]
        lines += _md_table1(_by_sweep(report["table1"], sweep))
        lines += ["", "## Paired with the FP32 twin "
                  f"(Int-b minus FP32; bootstrap 95% CI of the mean; {note})", ""]
        paired = _by_sweep(report["paired"], sweep)
        lines += _md_paired(paired) if paired else ["(no Int-b model with a done FP32 twin yet)"]
        lines += ["", f"## Table 2: weight L2 norm per precision (mean ± sd; {note})", ""]
        lines += _md_table2(_by_sweep(report["table2"], sweep))
        lines.append("")
    for section in report.get("sections", []):
        note = f" ({collapsed_note(report)})" if section.get("statistics") else ""
        rows = report[section["key"]]
        draw = _provider(section["render"]) if section.get("render") else _md_generic
        lines += [f"## {section['title']}{note}", "", *draw(rows), ""]
    for path in report.get("plots", []):
        lines.append(f"figure: {path}")
    return "\n".join(lines).rstrip() + "\n"


def to_csv(report: dict[str, Any]) -> str:
    """Each section as a CSV block under a '# <section>' line, blocks separated by a blank line."""
    out = io.StringIO()
    extra = [section["key"] for section in report.get("sections", [])]
    for key in ("progress", "table1", "paired", "table2", *extra):
        rows = report.get(key)
        if rows is None:
            continue
        out.write(f"# {key}\n")
        if rows:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        out.write("\n")
    return out.getvalue()


def to_json(report: dict[str, Any]) -> str:
    """The report object as JSON (NaN as null)."""
    return json.dumps(_clean(report), indent=2, default=str) + "\n"


def render(report: dict[str, Any], fmt: str) -> str:
    """The report in one of FORMATS."""
    return {"markdown": to_markdown, "csv": to_csv, "json": to_json}[fmt](report)
