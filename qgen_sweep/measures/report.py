"""Report sections for the measures: Table 3 and the granulated Kendall coefficients.

Called by qgen_sweep.analysis.report with a connection on which analysis/measures*.sql defined
the `measures` and `measures_table3` views.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import duckdb

from qgen_sweep.analysis.report import Section, md_table, num
from qgen_sweep.measures.kendall import DEFAULT_AXES, granulated_kendall
from qgen_sweep.measures.schema import MEASURE_NAMES

PRECISIONS = ("FP32", "Int8", "Int4", "Int2")  # the paper's column order
# Kendall is also reported for the weight norm, the classic baseline measure (Jiang et al.).
KENDALL_MEASURES = (*MEASURE_NAMES, "l2_norm")


def _fetch(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _lowest(row: dict[str, Any]) -> str | None:
    values = {p: row[p] for p in PRECISIONS if row[p] is not None and math.isfinite(row[p])}
    return min(values, key=values.get) if values else None


def table3(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """One row per (sweep, dataset, arch, settings, measure): mean normalised value per precision
    (FP32, Int8, Int4, Int2), the number of measured models, and `lowest`, the precision with the
    lowest mean (the paper marks it in bold). `settings` names the measure settings (noise
    convention, bn_affine, ascent lr and steps, restarts, MC samples) behind the numbers."""
    rows = _fetch(con, "SELECT * FROM measures_table3")
    return [{**row, "lowest": _lowest(row)} for row in rows]


def kendall(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """One row per (sweep, dataset, measure): psi per grid axis (psi_<axis>, NULL when the axis
    does not vary or has no usable group), the overall Psi, and the number of models."""
    data = _fetch(
        con,
        f"SELECT sweep, dataset, gap, {', '.join(DEFAULT_AXES)}, {', '.join(KENDALL_MEASURES)} "
        "FROM measures WHERE status = 'done' ORDER BY sweep, dataset, trial_id",
    )
    out = []
    for sweep, dataset in dict.fromkeys((r["sweep"], r["dataset"]) for r in data):
        rows = [r for r in data if r["sweep"] == sweep and r["dataset"] == dataset]
        for measure in KENDALL_MEASURES:
            result = granulated_kendall(rows, measure, target="gap", axes=DEFAULT_AXES)
            psi = {f"psi_{axis}": _none_if_nan(v) for axis, v in result.psi.items()}
            models = sum(1 for r in rows if r[measure] is not None)
            out.append({"sweep": sweep, "dataset": dataset, "measure": measure, **psi,
                        "Psi": _none_if_nan(result.overall), "models": models})
    return out


def _none_if_nan(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def sections(con: duckdb.DuckDBPyConnection, results_dir: Path, plots_dir: Path | None,
             formats: tuple[str, ...] = ()) -> tuple[list[Section], list]:
    """The report's provider (analysis.report.SECTION_PROVIDERS): Table 3 and Kendall's tau,
    when measures exist."""
    views = {row[0] for row in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
    if "measures" not in views:
        return [], []
    return [Section("table3", "Table 3: generalization measures", table3(con), statistics=True,
                    render="qgen_sweep.measures.report:md_table3"),
            Section("kendall", "Kendall", kendall(con), statistics=True)], []


def md_table3(rows: list[dict[str, Any]]) -> list[str]:
    """One table per (sweep, dataset, arch, measure settings), headed by what produced it."""
    if not rows:
        return ["(no rows)"]
    lines: list[str] = []
    groups = dict.fromkeys((r["sweep"], r["dataset"], r.get("arch"), r.get("settings"))
                           for r in rows)
    for sweep, dataset, arch, settings in groups:
        group = [r for r in rows if (r["sweep"], r["dataset"], r.get("arch"),
                                     r.get("settings")) == (sweep, dataset, arch, settings)]
        lines += [f"{sweep}, {dataset}, {arch}; measure settings: {settings}", ""]
        body = [[r["measure"], *(num(r[p], 4) for p in ("FP32", "Int8", "Int4", "Int2")),
                 str(r["models"]), r["lowest"] or "-"] for r in group]
        lines += md_table(["measure", "FP32", "Int8", "Int4", "Int2", "models", "lowest"], body)
        lines.append("")
    return lines[:-1]
