"""A per-user cache of each store's Parquet files, one consolidated file per store and kind.

Why: the store holds one small file per trial and kind. Opening a file costs about 1-2 ms on the
2-core CI machine (footer + 38 column chunks), so reading 1,944 trial files takes ~3 s, over the
report's 2 s budget before any work is done. The cache keeps the rows of every file already read,
keyed by (path, mtime_ns, size, inode); a load stats the files (microseconds each), keeps the
cached rows whose file is unchanged and reads only new or rewritten files. Writes are atomic
(os.replace).

The cache lives outside the results directory (which the analysis layer never writes):
$QGEN_SWEEP_CACHE_DIR, else $XDG_CACHE_HOME/qgen-sweep/analysis, else ~/.cache/qgen-sweep/analysis.
Deleting it is always safe. When it cannot be written, loads read the files directly.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import duckdb

from qgen_sweep.analysis._duck import execute
from qgen_sweep.store import ResultsStore, damage_remedy

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when the cached layout changes: old files are then ignored
KEY_COLUMNS = ("_file", "_mtime_ns", "_size", "_ino")  # one version of one file


def cache_root() -> Path:
    """The folder holding every store's cache files."""
    if os.environ.get("QGEN_SWEEP_CACHE_DIR"):
        return Path(os.environ["QGEN_SWEEP_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qgen-sweep" / "analysis"


def cache_path(store_root: Path, kind: str) -> Path:
    """Cache file of one store's kind: named after the store folder plus a hash of its path."""
    resolved = str(Path(store_root).resolve())
    digest = hashlib.sha256(resolved.encode()).hexdigest()[:16]
    return cache_root() / f"{Path(resolved).name}-{digest}" / f"{kind}.v{CACHE_VERSION}.parquet"


def listing(con: duckdb.DuckDBPyConnection, files: list[Path]) -> None:
    """Temp table _listing(_file, _mtime_ns, _size, _ino) of `files`; vanished ones left out.

    Built from list parameters rather than a registered Arrow table: registering imports pandas
    (~0.5 s), more than the whole grouped query may take.
    """
    names, mtimes, sizes, inodes = [], [], [], []
    for path in files:
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        names.append(str(path))
        mtimes.append(st.st_mtime_ns)
        sizes.append(st.st_size)
        inodes.append(st.st_ino)  # os.replace gives a rewritten file a new inode
    execute(
        con,
        """
        CREATE OR REPLACE TEMP TABLE _listing AS
        SELECT unnest($names::VARCHAR[]) AS _file, unnest($mtimes::BIGINT[]) AS _mtime_ns,
               unnest($sizes::BIGINT[]) AS _size, unnest($inodes::UBIGINT[]) AS _ino
        """,
        {"names": names, "mtimes": mtimes, "sizes": sizes, "inodes": inodes},
    )


def _read_files(con: duckdb.DuckDBPyConnection, table: str, files: list[str], create: bool) -> None:
    """Rows of `files` (plus their key columns from _listing) into `table`."""
    select = """
        SELECT r.* EXCLUDE (filename), l._file, l._mtime_ns, l._size, l._ino
        FROM read_parquet($files, hive_partitioning = false, union_by_name = true,
                          filename = true) AS r
        JOIN _listing AS l ON l._file = r.filename
    """
    if create:
        execute(con, f"CREATE TEMP TABLE {table} AS {select}", {"files": files})
    else:
        execute(con, f"INSERT INTO {table} BY NAME {select}", {"files": files})


def _readable(files: list[str]) -> list[str]:
    good = [name for name in files if ResultsStore.readable(Path(name))]
    for name in sorted(set(files) - set(good)):
        log.warning("skipping %s: it does not read back as Parquet; %s", name,
                    damage_remedy(Path(name)))
    return good


def _read_new(con: duckdb.DuckDBPyConnection, table: str, files: list[str], create: bool) -> bool:
    """Read `files` into `table`, skipping unreadable ones; False when none could be read."""
    try:
        _read_files(con, table, files, create)
        return True
    except duckdb.Error:
        # A hand-truncated file fails read_parquet as a whole; the others still count.
        files = _readable(files)
        if not files:
            return False
        _read_files(con, table, files, create)
        return True


def _from_cache(con: duckdb.DuckDBPyConnection, table: str, path: Path) -> int | None:
    """Rows of the cache whose file is unchanged into `table`; the cache's row count, or None."""
    if not path.is_file():
        return None
    try:
        total = con.execute("SELECT count(*) FROM read_parquet($cache)", {"cache": str(path)})
        total = total.fetchall()[0][0]
        execute(
            con,
            f"""
            CREATE TEMP TABLE {table} AS
            SELECT c.* FROM read_parquet($cache) AS c
            SEMI JOIN _listing AS l USING (_file, _mtime_ns, _size, _ino)
            """,
            {"cache": str(path)},
        )
        return total
    except (duckdb.Error, OSError) as error:
        log.info("ignoring unreadable analysis cache %s: %s", path, error)
        execute(con, f"DROP TABLE IF EXISTS {table}")
        return None


def _write(con: duckdb.DuckDBPyConnection, table: str, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            execute(con, f"COPY {table} TO $tmp (FORMAT parquet)", {"tmp": tmp})
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except (OSError, duckdb.Error) as error:
        log.info("analysis cache not written (%s); the next load reads the files again", error)


def load(
    con: duckdb.DuckDBPyConnection, table: str, store_root: Path, kind: str, files: list[Path]
) -> bool:
    """Create temp table `table` with the rows of `files` (+ key columns), through the cache.

    Returns False when no file could be read (the table is then not created).
    """
    listing(con, files)
    try:
        path = cache_path(store_root, kind)
        cached_rows = _from_cache(con, table, path)
        have = (
            set()
            if cached_rows is None
            else {row[0] for row in con.execute(f"SELECT DISTINCT _file FROM {table}").fetchall()}
        )
        new = [str(p) for p in files if str(p) not in have]
        created = cached_rows is not None
        if new:
            try:
                read = _read_new(con, table, new, create=not created)
            except duckdb.Error:
                # New files whose columns the cache lacks: start again from the files alone.
                execute(con, f"DROP TABLE IF EXISTS {table}")
                created, read = False, _read_new(con, table, [str(p) for p in files], True)
            created = created or read
        if not created:
            return False
        kept = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        if new or kept != cached_rows:
            _write(con, table, path)
        return True
    finally:
        execute(con, "DROP TABLE _listing")
