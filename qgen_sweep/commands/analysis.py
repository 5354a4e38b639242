"""Analysis commands: query (read-only SQL over the results), report (Tables 1 and 2, figures).

    qgen-sweep query smoke "SELECT bits, avg(gap) FROM trials GROUP BY bits"
    qgen-sweep query --results-dir runs "SELECT sweep, bits, avg(gap) FROM trials GROUP BY ALL"
    qgen-sweep query smoke --schema
    qgen-sweep report smoke [--format markdown|csv|json] [--plots DIR]

DuckDB, pyarrow, scipy and matplotlib are imported inside the commands.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import click

from qgen_sweep.errors import QGenError, StoreError, UsageError

QUERY_FORMATS = ("table", "csv", "json", "markdown", "parquet")
_RESULTS_HELP = (
    "Results directory: one sweep's store, or a folder of sweep stores (every sweep, told apart "
    "by the `sweep` column). Default: ./runs/SWEEP."
)


def default_results_dir(sweep: str) -> Path:
    """./runs/<sweep>; else the results_dir the sweep's spec names, when it names one."""
    default = Path("runs") / sweep
    if default.exists():
        return default
    try:
        from qgen_sweep.spec import load_spec

        return load_spec(sweep, ()).default_results_dir()
    except (QGenError, OSError):  # no such spec: the documented default
        return default


def resolve_results_dir(sweep: str | None, results_dir: Path | None) -> Path:
    """The folder to analyse: --results-dir (narrowed to DIR/SWEEP when that is a store), or
    ./runs/SWEEP."""
    if results_dir is None:
        if sweep is None:
            raise UsageError("name a SWEEP or pass --results-dir DIR (e.g. --results-dir runs)")
        return default_results_dir(sweep)
    if sweep is not None and (results_dir / sweep).is_dir():
        return results_dir / sweep
    return results_dir


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


def format_rows(names: list[str], rows: list[tuple], fmt: str) -> str:
    """Rows as an aligned text table, CSV, JSON (list of objects) or a markdown table."""
    if fmt == "json":
        records = [{n: _json_value(v) for n, v in zip(names, row, strict=True)} for row in rows]
        return json.dumps(records, indent=2, default=str) + "\n"
    cells = [[_cell(v) for v in row] for row in rows]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(cells)
        return out.getvalue()
    if fmt == "markdown":
        lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells]) + "\n"
    widths = [max([len(n)] + [len(c[i]) for c in cells]) for i, n in enumerate(names)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines) + "\n"


def _check_output(output: Path | None, fmt: str, results_dir: Path) -> None:
    if fmt == "parquet" and output is None:
        raise UsageError("--format parquet writes a file: add --output FILE.parquet")
    if output is None:
        return
    if not output.parent.is_dir() or output.is_dir():
        raise UsageError(f"--output {output} must be a file in an existing folder; create "
                         f"{output.parent} first, or pick another path")
    inside = output.resolve().is_relative_to(results_dir.resolve())
    if inside:
        raise UsageError(
            f"--output {output} is inside the results directory {results_dir}, which query "
            "never modifies; write it elsewhere"
        )


_NO_SQL = ('no SQL statement given: add one in quotes, e.g. qgen-sweep query {target} '
           '"SELECT precision, avg(gap) FROM trials GROUP BY ALL" (--schema lists the views)')


def _split_args(args: tuple[str, ...], schema: bool) -> tuple[str | None, str | None]:
    """[SWEEP] SQL -> (sweep, sql); with --schema: [SWEEP] -> (sweep, None)."""
    wanted = 1 if schema else 2
    if not schema and not args:
        raise UsageError(_NO_SQL.format(target="SWEEP"))
    if not schema and len(args) == 1 and re.fullmatch(r"[\w.@-]+", args[0]):
        # one word: a sweep name without its statement (no SQL statement is one bare word)
        raise UsageError(_NO_SQL.format(target=args[0]))
    if len(args) > wanted:
        usage = "[SWEEP] --schema" if schema else '[SWEEP] "SQL"'
        raise UsageError(f"query takes {usage}, but got {len(args)} argument(s): {list(args)}")
    if schema:
        return (args[0] if args else None), None
    return (args[0], args[1]) if len(args) == 2 else (None, args[0])


def _write(text_or_table: Any, fmt: str, output: Path | None) -> None:
    if output is None:
        click.echo(text_or_table, nl=False)
        return
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(text_or_table, output)
        else:
            output.write_text(text_or_table, encoding="utf-8")
    except OSError as error:  # pyarrow's file errors are OSErrors too
        raise UsageError(f"--output {output} cannot be written ({error.strerror or error}); "
                         "pick a writable file path") from None


@click.command("query")
@click.argument("args", nargs=-1, metavar='[SWEEP] "SQL"')
@click.option("--results-dir", type=click.Path(path_type=Path), default=None, help=_RESULTS_HELP)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(QUERY_FORMATS),
    default="table",
    show_default=True,
    help="Output format (parquet needs --output).",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the result to FILE instead of standard output.",
)
@click.option("--schema", is_flag=True, help="List the views and their columns, then exit.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    help="Most rows to output (0 = all); a note on stderr says when rows were left out.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds the statement may run before it is stopped.",
)
def query_command(
    args: tuple[str, ...],
    results_dir: Path | None,
    fmt: str,
    output: Path | None,
    schema: bool,
    limit: int,
    timeout: float,
) -> None:
    """Run one read-only SQL statement over the views trials, epochs, failures, plan (and
    measures). Nothing in the results directory can be changed through it: one statement that
    only reads, no file access, a time limit (--timeout), a memory limit (a quarter of the
    machine's) and a row cap (--limit).

    \b
    Examples:
      qgen-sweep query smoke "SELECT precision, avg(gap) FROM trials GROUP BY ALL"
      qgen-sweep query --results-dir runs "SELECT sweep, bits, avg(gap) FROM trials GROUP BY ALL"
      qgen-sweep query smoke "SELECT state, count(*) FROM plan GROUP BY ALL" --format json
      qgen-sweep query smoke "SELECT * FROM epochs" --limit 0 --format csv --output epochs.csv
      qgen-sweep query smoke --schema
    """
    from qgen_sweep.analysis.db import connect, kinds_for_query, schema_rows
    from qgen_sweep.analysis.sandbox import read_only_statement, run_statement, run_statement_arrow

    sweep, sql = _split_args(args, schema)
    folder = resolve_results_dir(sweep, results_dir)
    _check_output(output, fmt, folder)
    if schema:
        rows = schema_rows(connect(folder, kinds=("measures",)))
        _write(format_rows(["view", "column", "type", "description"], rows, fmt), fmt, output)
        return
    read_only_statement(sql)  # refused before any file is read
    con = connect(folder, kinds_for_query(sql))
    if fmt == "parquet":
        table, cut = run_statement_arrow(con, sql, limit=limit, timeout=timeout)
        _write(table, fmt, output)
        empty = table.num_rows == 0
    else:
        result = run_statement(con, sql, limit=limit, timeout=timeout)
        _write(format_rows(result.names, result.rows, fmt), fmt, output)
        empty, cut = not result.rows, result.truncated
    if cut:
        click.echo(f"note: only the first {limit} rows were output; pass --limit N for more "
                   "(--limit 0 for all)", err=True)
    if empty and con.execute("SELECT count(*) FROM raw_trials").fetchall()[0][0] == 0:
        click.echo(f"note: no finished trials in {folder} yet (the views are empty)", err=True)


@click.command("report")
@click.argument("sweep", required=False)
@click.option("--results-dir", type=click.Path(path_type=Path), default=None, help=_RESULTS_HELP)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("markdown", "csv", "json")),
    default="markdown",
    show_default=True,
    help="markdown for people, json for scripts.",
)
@click.option(
    "--plots",
    "plots_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Also write the figures into this folder (PNG, PDF and SVG; see --plot-formats).",
)
@click.option(
    "--plot-formats",
    default="png,pdf,svg",
    show_default=True,
    help="Comma-separated figure formats for --plots, among png, pdf, svg.",
)
@click.option(
    "--include-collapsed",
    is_flag=True,
    help="Keep collapsed trials (chance-level accuracy or a huge training loss) in the means and "
    "paired statistics; by default they are counted in each table's heading and left out.",
)
def report_command(
    sweep: str | None,
    results_dir: Path | None,
    fmt: str,
    plots_dir: Path | None,
    plot_formats: str,
    include_collapsed: bool,
) -> None:
    """Per-precision generalization report: Table 1, paired statistics against each model's
    FP32 twin (bootstrap 95% CI, Wilcoxon p), Table 2 (weight L2 norm), optional figures
    (paired differences with CIs, loss curves, step sizes, measures, gap). Collapsed trials
    (final training accuracy at most 1.5x chance, or training loss above 10 ln(classes)) are
    left out of every statistic unless --include-collapsed.

    \b
    Examples:
      qgen-sweep report smoke
      qgen-sweep report smoke --plots figures/ --plot-formats pdf,svg
      qgen-sweep report --results-dir runs --format json
      qgen-sweep report digits-grid --include-collapsed
    """
    from qgen_sweep.analysis.report import build_report, progress_line, render
    from qgen_sweep.analysis.style import FORMATS

    formats = tuple(f.strip() for f in plot_formats.split(",") if f.strip())
    if not formats or set(formats) - set(FORMATS):
        raise UsageError(
            f"--plot-formats takes a comma-separated subset of {','.join(FORMATS)}, "
            f"but got {plot_formats!r} (e.g. --plot-formats png,svg)"
        )
    folder = resolve_results_dir(sweep, results_dir)
    report = build_report(folder, plots_dir, plot_formats=formats,
                          include_collapsed=include_collapsed)
    if not report["progress"]:
        raise StoreError(
            f"no trials in {folder}: nothing planned, finished or failed yet "
            "(run `qgen-sweep launch SWEEP` first)"
        )
    click.echo(render(report, fmt), nl=False)
    if fmt != "markdown":
        for row in report["progress"]:
            click.echo(progress_line(row), err=True)


COMMANDS = (query_command, report_command)
