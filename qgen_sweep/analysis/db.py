"""DuckDB over the results store: find the stores, load them, create the named views read-only.

The Parquet files of every store under a results directory are loaded into in-memory tables
`raw_<kind>` (with a `sweep` column), then file access is switched off and the configuration
locked (with a memory limit well under the machine's), then analysis/views.sql,
analysis/landscape.sql (and analysis/measures*.sql when measures exist) define the named views over
those tables. Nothing the connection runs afterwards can read or write a file, so the results
directory cannot be modified through it; user SQL reaches it only through
qgen_sweep.analysis.sandbox. The header of analysis/views.sql is the contract for SQL files that
add views.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from qgen_sweep.analysis import cache, sandbox
from qgen_sweep.analysis._duck import execute
from qgen_sweep.collapse import collapsed_sql
from qgen_sweep.errors import QGenError, ResultsDirError
from qgen_sweep.resources import data_dir
from qgen_sweep.store import (
    EPOCH_SCHEMA,
    FAILURE_SCHEMA,
    LANDSCAPE_SCHEMA,
    PLAN_SCHEMA,
    TRIAL_SCHEMA,
    ResultsStore,
)

log = logging.getLogger(__name__)

# kind -> (schema used when no file exists, or None when the kind has no fixed schema)
KINDS: dict[str, pa.Schema | None] = {
    "plan": PLAN_SCHEMA,
    "trials": TRIAL_SCHEMA,
    "epochs": EPOCH_SCHEMA,
    "failures": FAILURE_SCHEMA,
    "measures": None,
    "landscape": LANDSCAPE_SCHEMA,
    "robustness": None,
}
# Columns added to the schemas after stores were written, with the value older files mean.
BACKFILL = {
    "arch": "'nin'",  # every trial before architectures were an axis trained NiN
    "bn_affine": "'perturb'",  # measures before the setting perturbed every folded parameter
}
# Columns a kind without a fixed schema (measures) may lack in older files: name -> DuckDB type.
LATE_COLUMNS = {"measures": {"bn_affine": "VARCHAR"}}
_STORE_MARKERS = ("plan.parquet", "sweep.toml", "trials", "epochs", "failures", "measures",
                  "landscape", "robustness")
# Files run after views.sql on every connection (their kinds have fixed schemas, so their raw
# tables always exist, empty or not).
_ALWAYS_SQL = ("landscape.sql",)
# DuckDB's default memory limit is 80% of RAM; an analysis connection gets a quarter (a query
# over ~2,000 trials needs tens of MB), so a runaway user query fails before the machine swaps.
MEMORY_FRACTION = 0.25


@dataclass(frozen=True)
class Store:
    """One sweep's results directory and the label its rows carry in the `sweep` column.

    A store is identified by its path (and shows its spec hash): `sweep` is the sweep's name when
    no other store in the results directory has that name, else `<name>@<folder>`, so replicates
    and reruns of one sweep are never merged (their trial ids are the same content addresses).
    """

    root: Path
    sweep: str
    name: str = ""  # the sweep's own name (plan.parquet's, else its trial rows', else the folder)
    spec_hash: str | None = None  # from the saved sweep.toml; None when there is none

    def files(self, kind: str) -> list[Path]:
        """The final Parquet files of one kind (plan: the single plan.parquet when present)."""
        if kind == "plan":
            path = ResultsStore(self.root).plan_path
            return [path] if path.is_file() else []
        return list(ResultsStore(self.root).files(kind))


def _is_store(folder: Path) -> bool:
    return any((folder / marker).exists() for marker in _STORE_MARKERS)


def _sweep_name(root: Path) -> str:
    """The sweep a store belongs to: plan.parquet's name, else its trial rows', else the folder."""
    candidates = [ResultsStore(root).plan_path, *ResultsStore(root).files("trials")]
    for path in candidates[:2]:
        if not path.is_file():
            continue
        try:
            names = duckdb.execute(
                "SELECT sweep FROM read_parquet($path) WHERE sweep IS NOT NULL LIMIT 1",
                {"path": str(path)},
            ).fetchall()
        except duckdb.Error:
            continue
        if names:
            return str(names[0][0])
    return root.resolve().name


def _spec_hash(root: Path) -> str | None:
    """The spec hash a launch wrote into the header of the store's sweep.toml (None: none)."""
    try:
        text = ResultsStore(root).spec_text()
    except (OSError, UnicodeDecodeError):
        return None
    for line in (text or "").splitlines()[:5]:
        if line.startswith("# spec hash:"):
            return line.removeprefix("# spec hash:").strip() or None
    return None


def _store(root: Path, label: str | None = None) -> Store:
    name = _sweep_name(root)
    return Store(root, label or name, name, _spec_hash(root))


def check_results_dir(root: Path) -> None:
    """A ResultsDirError (exit 2) unless `root` is an existing folder."""
    if root.is_file():
        raise ResultsDirError(
            f"results directory {str(root)!r} is a file, not a folder; pass the folder a launch "
            "wrote (e.g. --results-dir runs/smoke), or a folder of such folders"
        )
    if not root.is_dir():
        raise ResultsDirError(
            f"results directory {str(root)!r} does not exist (run `qgen-sweep launch SWEEP` "
            "first, `qgen-sweep list` names the shipped sweeps, or pass --results-dir DIR)"
        )


def find_stores(results_dir: Path | str) -> list[Store]:
    """The sweep stores in `results_dir`: the folder itself, or its sub-folders that are stores.

    Sub-folder stores sharing a sweep name are labelled `<name>@<folder>` (see Store).
    """
    root = Path(results_dir)
    check_results_dir(root)
    if _is_store(root):
        return [_store(root)]
    stores = [_store(sub) for sub in sorted(root.iterdir()) if sub.is_dir() and _is_store(sub)]
    if not stores:
        raise ResultsDirError(
            f"no sweep results in {str(root)!r}: it holds no plan.parquet, trials/ or sweep "
            "folders (run `qgen-sweep launch SWEEP --results-dir DIR` first)"
        )
    names = [store.name for store in stores]
    return [_store(store.root, f"{store.name}@{store.root.name}") if names.count(store.name) > 1
            else store for store in stores]


def _load_stores(con: duckdb.DuckDBPyConnection, stores: list[Store]) -> None:
    """raw_stores: one row per store (sweep label, sweep name, absolute path, spec hash)."""
    execute(con, "CREATE TABLE raw_stores (sweep VARCHAR, name VARCHAR, path VARCHAR, "
                 "spec_hash VARCHAR)")
    for store in stores:
        execute(con, "INSERT INTO raw_stores VALUES (?, ?, ?, ?)",
                [store.sweep, store.name, str(store.root.resolve()), store.spec_hash])


def _load_started(con: duckdb.DuckDBPyConnection, stores: list[Store]) -> None:
    """raw_started: one row per trial that has started (its attempts log exists), with
    `running` = a launch or resume holds its store's lock now: what `qgen-sweep status` counts
    as running (started, lock held) or interrupted (started, nobody running it)."""
    from qgen_sweep.store import lock_holder

    execute(con, "CREATE TABLE raw_started (sweep VARCHAR, trial_id VARCHAR, running BOOLEAN)")
    for store in stores:
        started = sorted(ResultsStore(store.root).started_ids())
        if started:
            running = lock_holder(store.root) is not None
            con.executemany("INSERT INTO raw_started VALUES (?, ?, ?)",
                            [(store.sweep, trial_id, running) for trial_id in started])


_DUCK_TYPES = {
    "string": "VARCHAR",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "double": "DOUBLE",
    "list<item: string>": "VARCHAR[]",
    "list<item: double>": "DOUBLE[]",
    "timestamp[us, tz=UTC]": "TIMESTAMPTZ",
}


def _empty_raw(con: duckdb.DuckDBPyConnection, kind: str) -> bool:
    """raw_<kind> with the kind's schema and no rows; False when the kind has no fixed schema."""
    schema = KINDS[kind]
    if schema is None:
        return False
    columns = ", ".join(
        f'"{field.name}" {_DUCK_TYPES[str(field.type)]}'
        for field in schema
        if field.name != "sweep"
    )
    execute(con, f"CREATE TABLE raw_{kind} (sweep VARCHAR, {columns})")
    return True


def _load_kind(con: duckdb.DuckDBPyConnection, stores: list[Store], kind: str) -> bool:
    """Create raw_<kind>: every store's rows of `kind`, labelled with the store's sweep first.

    Returns False when nothing exists for a kind without a fixed schema (measures).
    """
    parts: list[tuple[str, str]] = []  # (temp table, sweep label)
    for index, store in enumerate(stores):
        files = store.files(kind)
        table = f"_s{index}__{kind}"
        if files and cache.load(con, table, store.root, kind, files):
            parts.append((table, store.sweep))
    if not parts:
        return _empty_raw(con, kind)
    selects = []
    for table, _ in parts:
        names = {row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()}
        drop = ", ".join([*cache.KEY_COLUMNS, *(["sweep"] if "sweep" in names else [])])
        selects.append(f"SELECT ? AS sweep, * EXCLUDE ({drop}) FROM {table}")
    execute(
        con,
        f"CREATE TABLE raw_{kind} AS " + " UNION ALL BY NAME ".join(selects),
        [sweep for _, sweep in parts],
    )
    for table, _ in parts:
        execute(con, f"DROP TABLE {table}")
    _backfill(con, kind)
    return True


def _backfill(con: duckdb.DuckDBPyConnection, kind: str) -> None:
    """Give raw_<kind> every column of its schema (and LATE_COLUMNS); files older than a column
    read as BACKFILL."""
    schema = KINDS[kind]
    columns = {} if schema is None else {f.name: _DUCK_TYPES[str(f.type)] for f in schema}
    columns.update(LATE_COLUMNS.get(kind, {}))
    have = {row[0] for row in con.execute(f"DESCRIBE raw_{kind}").fetchall()}
    for name, duck_type in columns.items():
        if name not in have:
            execute(con, f'ALTER TABLE raw_{kind} ADD COLUMN "{name}" {duck_type}')
        if name in BACKFILL:
            execute(con, f'UPDATE raw_{kind} SET "{name}" = {BACKFILL[name]} '
                         f'WHERE "{name}" IS NULL')


def _run_script(con: duckdb.DuckDBPyConnection, path: Path,
                replace: dict[str, str] | None = None) -> None:
    text = path.read_text()
    for placeholder, value in (replace or {}).items():
        text = text.replace(placeholder, value)
    for statement in duckdb.extract_statements(text):
        try:
            execute(con, statement.query)
        except duckdb.Error as error:
            first = str(error).splitlines()[0]
            raise QGenError(f"{path.name}: {first} (fix the SQL in {path})") from error


def sql_file(name: str) -> Path:
    """Path of analysis/<name> (views.sql, table1.sql, ...)."""
    return data_dir("analysis") / name


def connect(
    results_dir: Path | str, kinds: Iterable[str] | None = None, include_collapsed: bool = False
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the named views over `results_dir`, read-only.

    `results_dir` is one sweep's store or a folder of them (every view then has rows of each,
    told apart by `sweep`). `kinds` limits which kinds are loaded from disk (default: all); the
    others are empty tables, which is how `query` skips the 300-row-per-trial epochs it does not
    need. File access is off afterwards: the connection cannot read or write any file.
    `include_collapsed` shows collapsed trials (qgen_sweep.collapse) as 'done' in the views, so
    every statistic over done trials keeps them (report --include-collapsed).
    """
    stores = find_stores(results_dir)
    wanted = set(KINDS if kinds is None else kinds)
    con = duckdb.connect(":memory:")
    loaded = {kind for kind in KINDS if _load_kind(con, stores if kind in wanted else [], kind)}
    _load_stores(con, stores)
    _load_started(con, stores if "plan" in wanted else [])
    _lock_down(con)
    for statement in collapsed_sql(include_collapsed):
        execute(con, statement)
    _run_script(con, sql_file("views.sql"))
    _run_script(con, sql_file("paired_view.sql"),
                {"{paired}": sql_file("paired.sql").read_text().strip().rstrip(";")})
    for name in _ALWAYS_SQL:
        _run_script(con, sql_file(name))
    # A kind without a fixed schema (measures, robustness) has its views in analysis/<kind>*.sql,
    # run when some store has its files.
    for kind in (k for k, schema in KINDS.items() if schema is None and k in loaded):
        for path in sorted(data_dir("analysis").glob(f"{kind}*.sql")):
            _run_script(con, path)
    return con


def memory_limit_bytes() -> int:
    """The memory limit of an analysis connection: MEMORY_FRACTION of physical memory."""
    import os

    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(256 << 20, int(total * MEMORY_FRACTION))


def _lock_down(con: duckdb.DuckDBPyConnection) -> None:
    """The sandbox: memory limit, no spilling, no progress bar, no file access, settings locked."""
    execute(con, f"SET memory_limit = '{memory_limit_bytes() // (1 << 20)}MiB'")
    execute(con, "SET temp_directory = ''")  # never spill into the working directory
    execute(con, "SET enable_progress_bar = false")
    execute(con, "SET enable_external_access = false")
    execute(con, "SET lock_configuration = true")


def kinds_for_query(sql: str) -> set[str]:
    """The kinds a query may read: every kind whose view name appears as a word in it.

    A cheap over-approximation (a column named `epochs` also loads the epochs); `plan` reads
    trials, failures and epochs as well, `paired` the trials.
    """
    words = set(re.findall(r"[a-z_]+", sql.lower()))
    kinds = {kind for kind in KINDS if kind in words or f"raw_{kind}" in words}
    if "plan" in kinds:
        kinds |= {"trials", "failures", "epochs"}
    if kinds & {"measures", "landscape", "robustness"} or "paired" in words:
        kinds.add("trials")  # measures*.sql, landscape.sql, robustness.sql, paired join trials
    return kinds


def run_query(con: duckdb.DuckDBPyConnection, sql: str, limit: int = 0,
              timeout: float | None = sandbox.DEFAULT_TIMEOUT_S) -> tuple[list[str], list[tuple]]:
    """Run one read-only statement (qgen_sweep.analysis.sandbox); return (column names, rows).

    `limit` caps the rows (0 = all). A refused statement or a DuckDB error of the SQL is a
    UsageError with the message on one line (exit 2).
    """
    result = sandbox.run_statement(con, sql, limit=limit, timeout=timeout)
    return result.names, result.rows


def schema_rows(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str, str]]:
    """(view, column, type, description) for every named view, in view then column order; the
    descriptions are the COMMENTs of the SQL files ('' where a column has none)."""
    return con.execute(
        """
        SELECT c.table_name, c.column_name, c.data_type, coalesce(c.comment, '')
        FROM duckdb_columns() AS c
        WHERE c.schema_name = 'main'
          AND c.table_name IN (SELECT view_name FROM duckdb_views() WHERE NOT internal)
        ORDER BY c.table_name, c.column_index
        """
    ).fetchall()
