"""The landscape sections of `qgen-sweep report`, and every landscape figure.

Sections (torch-free, from the `landscape` and `landscape_table` views of analysis/landscape.sql):
    landscape_flatness  mean flatness summaries per precision (FP32, Int8, Int4, Int2), one row
                        per sweep, dataset, landscape setting and summary
    landscape_kendall   granulated Kendall coefficient of each summary against the gap (the same
                        columns as the measures' Kendall table, so the two read side by side)
With --plots the report also draws, per sweep, the Figure 2 panel and the interpolation lines of
one configuration: the complete one (every precision present) whose FP32 gap is the median.
`qgen-sweep landscape --plots DIR` draws every trial and every complete configuration.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb

from qgen_sweep.analysis.report import Section
from qgen_sweep.landscape import figures

SUMMARIES = ("loss_rise", "acc_drop", "curvature", "init_barrier", "twin_barrier")
_TRIAL_COLUMNS = ("sweep, dataset, trial_id, config_id, landscape_id, bits, precision, dims, "
                  "grid, span, n, radius, loss_centre, loss_rise, optimizer, lr, lr_index, "
                  "weight_decay, depth, width, gap")


def _fetch(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict]:
    cursor = con.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def flatness_rows(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """landscape_table: the flatness summaries' means per precision."""
    return _fetch(con, "SELECT * FROM landscape_table")


def kendall_rows(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Per sweep, dataset and landscape setting: psi per grid axis and Psi of each summary
    against the generalization gap (granulated Kendall, qgen_sweep.measures.kendall)."""
    from qgen_sweep.measures.kendall import DEFAULT_AXES, granulated_kendall

    data = _fetch(con, f"SELECT sweep, dataset, landscape_id, gap, {', '.join(DEFAULT_AXES)}, "
                       f"{', '.join(SUMMARIES)} FROM landscape WHERE status = 'done' "
                       "ORDER BY sweep, dataset, landscape_id, trial_id")
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in data:
        groups[(row["sweep"], row["dataset"], row["landscape_id"])].append(row)
    out = []
    for (sweep, dataset, landscape_id), rows in groups.items():
        for measure in SUMMARIES:
            result = granulated_kendall(rows, measure, target="gap", axes=DEFAULT_AXES)
            psi = {f"psi_{axis}": _finite_or_none(v) for axis, v in result.psi.items()}
            models = sum(1 for r in rows if _finite_or_none(r[measure]) is not None)
            out.append({"sweep": sweep, "dataset": dataset, "landscape_id": landscape_id,
                        "measure": f"landscape_{measure}", **psi,
                        "Psi": _finite_or_none(result.overall), "models": models})
    return out


def _finite_or_none(value: Any) -> float | None:
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _trials(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return _fetch(con, f"SELECT {_TRIAL_COLUMNS} FROM landscape "
                       "ORDER BY sweep, config_id, landscape_id, bits DESC")


def configurations(trials: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """(sweep, config_id, landscape_id) -> that configuration's trials with a 2D surface."""
    out: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for trial in trials:
        if trial["dims"] == 2:
            out[(trial["sweep"], trial["config_id"], trial["landscape_id"])].append(trial)
    return out


def _complete(configs: dict[tuple, list[dict]]) -> dict[tuple, list[dict]]:
    """The configurations that have every precision their sweep has surfaces for."""
    present: dict[tuple, set[str]] = defaultdict(set)
    for (sweep, _, landscape_id), trials in configs.items():
        present[(sweep, landscape_id)] |= {t["precision"] for t in trials}
    return {key: trials for key, trials in configs.items()
            if {t["precision"] for t in trials} == present[(key[0], key[2])]}


def representative(configs: dict[tuple, list[dict]]) -> dict[str, tuple]:
    """Per sweep, the complete configuration (of its most common landscape setting) whose FP32
    gap (else its first precision's) is the median: the one the report draws."""
    complete = _complete(configs)
    by_sweep: dict[str, list[tuple]] = defaultdict(list)
    for key in complete:
        by_sweep[key[0]].append(key)
    chosen = {}
    for sweep, keys in by_sweep.items():
        settings = [k[2] for k in keys]
        common = max(sorted(set(settings)), key=settings.count)
        keys = sorted((k for k in keys if k[2] == common), key=lambda k: _gap(complete[k]))
        chosen[sweep] = keys[len(keys) // 2]
    return chosen


def _gap(trials: list[dict]) -> float:
    first = min(trials, key=lambda t: figures.ORDER.index(t["precision"]))
    return first["gap"] if first["gap"] is not None else math.inf


def _config_figures(con: duckdb.DuckDBPyConnection, key: tuple, trials: list[dict],
                    out_dir: Path, formats: tuple[str, ...]) -> list[Path]:
    sweep, config_id, landscape_id = key
    ids = [t["trial_id"] for t in trials]
    points = figures.curve_points(con, landscape_id, ids)
    paths = figures.panel_figure(trials, points, out_dir, f"{sweep}-landscape-panel-{config_id}",
                                 formats)
    init = figures.curve_points(con, landscape_id, ids, "init")
    twin = figures.curve_points(con, landscape_id, ids, "twin")
    if any(init.values()) or any(twin.values()):
        paths += figures.lines_figure(trials, init, twin, out_dir,
                                      f"{sweep}-landscape-lines-{config_id}", formats)
    return paths


def report_figures(con: duckdb.DuckDBPyConnection, out_dir: Path,
                   formats: tuple[str, ...] = figures.style.FORMATS) -> list[Path]:
    """The report's landscape figures: per sweep, the representative configuration's panel
    and lines."""
    configs = configurations(_trials(con))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for key in representative(configs).values():
        paths += _config_figures(con, key, configs[key], out_dir, formats)
    return paths


def all_figures(con: duckdb.DuckDBPyConnection, out_dir: Path,
                formats: tuple[str, ...] = figures.style.FORMATS) -> list[Path]:
    """Every trial's surface figure and every complete configuration's panel and lines."""
    trials = _trials(con)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for trial in trials:
        points = figures.curve_points(con, trial["landscape_id"], [trial["trial_id"]])
        stem = f"{trial['sweep']}-landscape-{trial['trial_id']}-{trial['precision']}"
        if points[trial["trial_id"]]:
            paths += figures.trial_figure(trial, points[trial["trial_id"]], out_dir, stem,
                                          formats)
    for key, config in _complete(configurations(trials)).items():
        paths += _config_figures(con, key, config, out_dir, formats)
    return paths


def sections(con: duckdb.DuckDBPyConnection, results_dir: Path, plots_dir: Path | None,
             formats: tuple[str, ...] = figures.style.FORMATS) -> tuple[list[Section], list[Path]]:
    """The report's provider (analysis.report.SECTION_PROVIDERS): flatness per precision, its
    Kendall coefficients, the Figure 2 panel (with --plots); nothing without landscapes."""
    flat = flatness_rows(con)
    if not flat:
        return [], []
    out = [
        Section("landscape_flatness", "Loss landscape: flatness per precision, mean over "
                "models; loss in nats, a and b in filter-normalized units, curvature in nats per "
                "unit^2", flat, statistics=True),
        Section("landscape_kendall", "Kendall: landscape flatness vs gap, in the columns of the "
                "measures' Kendall table", kendall_rows(con), statistics=True),
    ]
    paths = [] if plots_dir is None else report_figures(con, Path(plots_dir), formats)
    return out, paths
