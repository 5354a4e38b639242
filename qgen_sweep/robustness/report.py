"""Report sections for robustness: paper Table 4, accuracy under corruption, paired differences
against the FP32 twin per corruption, mCE relative to FP32, and the Kendall correlation of each
Table 3 measure with the corrupted-data gap. Torch-free: DuckDB over the views of
analysis/robustness.sql, statistics from qgen_sweep.analysis.stats.

`sections` is the provider that plugs these into `qgen-sweep report`
(qgen_sweep.analysis.report.SECTION_PROVIDERS); each section renders its markdown as one table
per sweep, dataset and source (`render`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb

from qgen_sweep.analysis.report import Section, fetch_rows, md_table, num

PRECISIONS = ("FP32", "Int8", "Int4", "Int2")  # the paper's order
Rows = list[dict[str, Any]]


def has_robustness(con: duckdb.DuckDBPyConnection) -> bool:
    views = {row[0] for row in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
    return "robustness" in views


def _better(row: dict[str, Any]) -> list[str]:
    """Precisions whose mean gap is below FP32's (the cells Table 4 marks)."""
    fp32 = row["FP32"]
    if fp32 is None:
        return []
    return [p for p in PRECISIONS[1:] if row[p] is not None and row[p] < fp32]


def table4(con: duckdb.DuckDBPyConnection) -> Rows:
    """One row per (sweep, dataset, source, corruption, severity): mean gap per precision, the
    models behind each, and `better`: the precisions with a smaller gap than FP32."""
    rows = fetch_rows(con, "SELECT * FROM robustness_table4")
    return [{**row, "better": ",".join(_better(row))} for row in rows]


def accuracy(con: duckdb.DuckDBPyConnection) -> Rows:
    """Mean accuracy (%) under each corruption (over severities and models) per precision, with
    the clean test accuracy and the mean over every corruption."""
    per = ", ".join(f"100 * avg({{col}}) FILTER (WHERE bits = {b}) AS \"{p}\""
                    for b, p in ((32, "FP32"), (8, "Int8"), (4, "Int4"), (2, "Int2")))
    base = "FROM robustness WHERE status = 'done'"
    clean = (f"SELECT sweep, dataset, source, 'clean' AS corruption, "
             f"{per.format(col='clean_test_acc')} {base} GROUP BY ALL")
    each = (f"SELECT sweep, dataset, source, corruption, {per.format(col='accuracy')} {base} "
            f"GROUP BY ALL")
    every = (f"SELECT sweep, dataset, source, 'all corruptions' AS corruption, "
             f"{per.format(col='accuracy')} {base} GROUP BY ALL")
    order = ("ORDER BY sweep, dataset, source, CASE corruption WHEN 'clean' THEN -1 "
             "WHEN 'all corruptions' THEN 99 ELSE corruption_order(corruption) END, corruption")
    return fetch_rows(con, f"SELECT * FROM ({clean} UNION ALL {each} UNION ALL {every}) {order}")


def _pair_means(con: duckdb.DuckDBPyConnection) -> Rows:
    """Per Int-b trial, source and corruption: the gap difference to its twin averaged over the
    severities both have, and the summed errors (for the corruption error CE)."""
    return fetch_rows(con, """
        SELECT sweep, dataset, source, bits, precision, corruption, trial_id,
               avg(gap_diff) AS gap_diff, avg(accuracy_diff) AS accuracy_diff,
               sum(error) AS error, sum(fp32_error) AS fp32_error
        FROM robustness_pairs
        GROUP BY sweep, dataset, source, bits, precision, corruption, trial_id
        ORDER BY sweep, dataset, source, precision_order(bits), corruption_order(corruption),
                 corruption, trial_id""")


def paired(con: duckdb.DuckDBPyConnection, pairs: Rows | None = None) -> Rows:
    """Int-b minus its FP32 twin per corruption (and over all of them): pairs, mean gap
    difference with its bootstrap 95% CI, median, Wilcoxon p; mean accuracy difference (pp)."""
    from qgen_sweep.analysis import stats

    pairs = _pair_means(con) if pairs is None else pairs
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in pairs:
        key = (row["sweep"], row["dataset"], row["source"], row["bits"], row["precision"])
        groups[(*key, row["corruption"])].append(row)
        groups[(*key, "all corruptions")].append(row)
    out = []
    for (sweep, dataset, source, bits, precision, corruption), rows in groups.items():
        diffs = _per_trial(rows, "gap_diff") if corruption == "all corruptions" else \
            [r["gap_diff"] for r in rows]
        acc = _per_trial(rows, "accuracy_diff") if corruption == "all corruptions" else \
            [r["accuracy_diff"] for r in rows]
        out.append({"sweep": sweep, "dataset": dataset, "source": source, "bits": bits,
                    "precision": precision, "corruption": corruption, "n_pairs": len(diffs),
                    "gap_diff": sum(diffs) / len(diffs), **stats.paired_summary(diffs),
                    "accuracy_diff": sum(acc) / len(acc)})
    return sorted(out, key=_paired_order)


def _paired_order(row: dict[str, Any]) -> tuple:
    """Sweep, dataset, source, the paper's precision order, the benchmark's corruption order
    with the mean over all corruptions last."""
    from qgen_sweep.robustness.params import ALL

    corruption = row["corruption"]
    place = ALL.index(corruption) if corruption in ALL else len(ALL) + (
        corruption == "all corruptions")
    return (row["sweep"], row["dataset"], row["source"], PRECISIONS.index(row["precision"])
            if row["precision"] in PRECISIONS else 9, place, corruption)


def _per_trial(rows: Rows, column: str) -> list[float]:
    """One value per trial: the mean of `column` over its corruptions."""
    values: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        values[row["trial_id"]].append(row[column])
    return [sum(v) / len(v) for v in values.values()]


def mce(con: duckdb.DuckDBPyConnection, pairs: Rows | None = None) -> Rows:
    """Mean corruption error relative to FP32 (Hendrycks & Dietterich's mCE with each model's
    FP32 twin as the baseline): CE_c = sum over severities of the error / the twin's, mCE = the
    mean of CE_c over the corruptions, in %; FP32 is 100 by definition. Per precision: the mean
    over pairs with its bootstrap 95% CI."""
    from qgen_sweep.analysis import stats

    pairs = _pair_means(con) if pairs is None else pairs
    per_trial: dict[tuple, list[float]] = defaultdict(list)
    for row in pairs:
        if row["fp32_error"] > 0:
            key = (row["sweep"], row["dataset"], row["source"], row["bits"], row["precision"],
                   row["trial_id"])
            per_trial[key].append(100 * row["error"] / row["fp32_error"])
    groups: dict[tuple, list[float]] = defaultdict(list)
    for key, ces in per_trial.items():
        groups[key[:5]].append(sum(ces) / len(ces))
    out = []
    for (sweep, dataset, source, bits, precision), values in groups.items():
        low, high = stats.bootstrap_ci(values)
        out.append({"sweep": sweep, "dataset": dataset, "source": source, "bits": bits,
                    "precision": precision, "n_pairs": len(values),
                    "mce": sum(values) / len(values), "ci_low": low, "ci_high": high})
    return out


def kendall(con: duckdb.DuckDBPyConnection) -> Rows:
    """Granulated Kendall coefficient of each Table 3 measure (and the weight norm) against
    each trial's mean gap over the corrupted sets of a source, when measures exist."""
    views = {row[0] for row in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
    if "measures" not in views:
        return []
    from qgen_sweep.measures.kendall import DEFAULT_AXES, granulated_kendall
    from qgen_sweep.measures.report import KENDALL_MEASURES

    data = fetch_rows(con, f"""
        SELECT m.sweep, m.dataset, r.source, r.corruption_gap,
               {', '.join('m.' + a for a in DEFAULT_AXES)},
               {', '.join('m.' + k for k in KENDALL_MEASURES)}
        FROM measures AS m
        JOIN (SELECT sweep, trial_id, source, avg(gap) AS corruption_gap FROM robustness
              WHERE status = 'done' GROUP BY ALL) AS r
          ON r.sweep = m.sweep AND r.trial_id = m.trial_id
        WHERE m.status = 'done' ORDER BY m.sweep, m.dataset, r.source, m.trial_id""")
    out = []
    for key in dict.fromkeys((r["sweep"], r["dataset"], r["source"]) for r in data):
        rows = [r for r in data if (r["sweep"], r["dataset"], r["source"]) == key]
        for measure in KENDALL_MEASURES:
            result = granulated_kendall(rows, measure, target="corruption_gap", axes=DEFAULT_AXES)
            psi = {f"psi_{axis}": _finite(v) for axis, v in result.psi.items()}
            out.append({"sweep": key[0], "dataset": key[1], "source": key[2],
                        "measure": measure, **psi, "Psi": _finite(result.overall),
                        "models": sum(1 for r in rows if r[measure] is not None)})
    return out


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


# -- markdown -------------------------------------------------------------------------------------


def _groups(rows: Rows) -> dict[tuple, Rows]:
    out: dict[tuple, Rows] = defaultdict(list)
    for row in rows:
        out[(row["sweep"], row["dataset"], row["source"])].append(row)
    return out


def _present(rows: Rows) -> list[str]:
    return [p for p in PRECISIONS if any(r.get(p) is not None for r in rows)]


def _md_table4(rows: Rows) -> list[str]:
    precisions = _present(rows)
    body = []
    for r in rows:
        marked = set(r["better"].split(",")) if r["better"] else set()
        cells = [f"**{num(r[p], 3)}**" if p in marked else num(r[p], 3) for p in precisions]
        body.append([r["corruption"], str(r["severity"]), *cells])
    counts = {p: max(r[f"n_{p.lower()}"] for r in rows) for p in precisions}
    header = ["corruption", "severity", *[f"{p} (n = {counts[p]})" for p in precisions]]
    return md_table(header, body)


def _md_accuracy(rows: Rows) -> list[str]:
    precisions = _present(rows)
    body = [[r["corruption"], *[num(r[p], 2) for p in precisions]] for r in rows]
    return md_table(["corruption", *[f"{p} acc %" for p in precisions]], body)


def _md_paired(rows: Rows) -> list[str]:
    from qgen_sweep.analysis.report import p_text

    body = [[r["precision"], r["corruption"], str(r["n_pairs"]), num(r["gap_diff"], 4),
             f"[{num(r['ci_low'], 4)}, {num(r['ci_high'], 4)}]", num(r["median_diff"], 4),
             p_text(r["p_value"]), num(r["accuracy_diff"], 2)] for r in rows]
    header = ["precision", "corruption", "pairs", "Δ gap (nats)", "95% CI", "median Δ",
              "Wilcoxon p", "Δ acc (pp)"]
    return md_table(header, body)


def _md_mce(rows: Rows) -> list[str]:
    body = [[r["precision"], str(r["n_pairs"]), num(r["mce"], 1),
             f"[{num(r['ci_low'], 1)}, {num(r['ci_high'], 1)}]"] for r in rows]
    return md_table(["precision", "pairs", "mCE (% of FP32)", "95% CI"], body)


def _md_kendall(rows: Rows) -> list[str]:
    columns = [k for k in rows[0] if k.startswith("psi_") and any(r[k] is not None for r in rows)]
    body = [[r["measure"], *[num(r[c], 3) for c in columns], num(r["Psi"], 3), str(r["models"])]
            for r in rows]
    return md_table(["measure", *columns, "Psi", "models"], body)


def _per_group(render):
    """A renderer of all rows: one sub-heading and table per sweep, dataset and source."""

    def draw(rows: Rows) -> list[str]:
        lines: list[str] = []
        for (sweep, dataset, source), group in _groups(rows).items():
            lines += [f"### {sweep}, {dataset}, {source}", "", *render(group), ""]
        return lines[:-1] if lines else ["(no rows)"]

    return draw


md_table4, md_accuracy, md_paired, md_mce, md_kendall = (
    _per_group(f) for f in (_md_table4, _md_accuracy, _md_paired, _md_mce, _md_kendall))
HERE = "qgen_sweep.robustness.report"
# (report key, heading, rows, renderer), in report order
PARTS = (
    ("robustness_table4", "Table 4: gap under corruption (corrupted test loss - clean train "
     "loss, nats; bold: smaller than FP32's)", table4, "md_table4"),
    ("robustness_accuracy", "Accuracy under corruption (%)", accuracy, "md_accuracy"),
    ("robustness_paired", "Under corruption, paired with the FP32 twin (Int-b minus FP32, mean "
     "over severities; bootstrap 95% CI of the mean)", None, "md_paired"),
    ("robustness_mce", "mCE relative to FP32 (FP32 = 100)", None, "md_mce"),
    ("robustness_kendall", "Kendall: Table 3 measures vs the gap under corruption", kendall,
     "md_kendall"),
)


def sections(con: duckdb.DuckDBPyConnection, results_dir: Path, plots_dir: Path | None,
             formats: tuple[str, ...] = ()) -> tuple[list[Section], list[Path]]:
    """The report provider: every robustness section (none without robustness rows) and, with
    `plots_dir`, the heatmaps it wrote."""
    if not has_robustness(con):
        return [], []
    pairs = _pair_means(con)
    rows = {"robustness_paired": paired(con, pairs), "robustness_mce": mce(con, pairs)}
    found = []
    for key, title, build, render in PARTS:
        data = rows[key] if build is None else build(con)
        if data:
            found.append(Section(key, title, data, statistics=True, render=f"{HERE}:{render}"))
    paths: list[Path] = []
    if plots_dir is not None:
        from qgen_sweep.robustness.figures import write_heatmaps

        paths = write_heatmaps(con, Path(plots_dir), formats or ("png",))
    return found, paths
