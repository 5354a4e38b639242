"""`qgen-sweep query` as a real subprocess over stores written with ResultsStore."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_analysis import build_known_store

EXE = str(Path(sys.executable).with_name("qgen-sweep"))


@pytest.fixture
def env(tmp_path_factory) -> dict[str, str]:
    """Subprocess environment with a private analysis cache."""
    return os.environ | {"QGEN_SWEEP_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}


@pytest.fixture
def runs(tmp_path) -> Path:
    build_known_store(tmp_path / "runs" / "alpha", sweep="alpha")
    build_known_store(tmp_path / "runs" / "beta", sweep="beta")
    return tmp_path / "runs"


def qgen(env, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_grouped_query_as_json(runs, env):
    sql = (
        "SELECT bits, count(*) AS n, round(avg(gap), 6) AS gap FROM trials "
        "WHERE status = 'done' GROUP BY bits ORDER BY bits"
    )
    result = qgen(env, "query", "--results-dir", str(runs / "alpha"), sql, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"bits": 2, "n": 2, "gap": 0.275},
        {"bits": 4, "n": 2, "gap": 0.4},
        {"bits": 8, "n": 3, "gap": 0.48},
        {"bits": 32, "n": 3, "gap": 0.5},
    ]


def test_default_results_dir_is_runs_sweep(runs, env):
    result = qgen(
        env,
        "query",
        "alpha",
        "SELECT count(*) AS n FROM trials",
        "--format",
        "csv",
        cwd=runs.parent,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["n", "11"]


def test_across_sweeps_has_a_sweep_column(runs, env):
    sql = "SELECT sweep, bits, count(*) AS n FROM trials GROUP BY ALL ORDER BY ALL"
    result = qgen(env, "query", "--results-dir", str(runs), sql, "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {r["sweep"] for r in rows} == {"alpha", "beta"}
    assert [(r["bits"], r["n"]) for r in rows if r["sweep"] == "beta"] == [
        ("2", "2"),
        ("4", "3"),
        ("8", "3"),
        ("32", "3"),
    ]


def test_table_and_markdown_formats(runs, env):
    sql = "SELECT precision, count(*) AS n FROM trials GROUP BY ALL ORDER BY precision"
    table = qgen(env, "query", "--results-dir", str(runs / "alpha"), sql)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == ["precision", "n"]
    assert "(4 rows)" in table.stdout
    markdown = qgen(env, "query", "--results-dir", str(runs / "alpha"), sql, "--format", "markdown")
    assert markdown.stdout.splitlines()[:3] == ["| precision | n |", "|---|---|", "| FP32 | 3 |"]


def test_parquet_output_outside_the_store(runs, env, tmp_path):
    out = tmp_path / "epochs.parquet"
    result = qgen(
        env,
        "query",
        "--results-dir",
        str(runs / "alpha"),
        "SELECT trial_id, epoch, train_loss FROM epochs",
        "--format",
        "parquet",
        "--output",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert pq.read_table(out).num_rows == 30
    inside = qgen(
        env,
        "query",
        "--results-dir",
        str(runs / "alpha"),
        "SELECT 1",
        "--output",
        str(runs / "alpha" / "x.csv"),
        "--format",
        "csv",
    )
    assert inside.returncode == 2 and "inside the results directory" in inside.stderr
    assert not (runs / "alpha" / "x.csv").exists()


def test_schema_lists_views_and_columns(runs, env):
    result = qgen(env, "query", "--results-dir", str(runs), "--schema", "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    views = {r["view"] for r in rows}
    assert {"trials", "epochs", "failures", "plan"} <= views
    assert {"sweep", "gap", "precision"} <= {r["column"] for r in rows if r["view"] == "trials"}
    assert "state" in {r["column"] for r in rows if r["view"] == "plan"}


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM trials",
        "COPY trials TO '{out}'",
        "CREATE TABLE copy AS SELECT * FROM trials",
        "ATTACH '{out}.db'",
        "SELECT * FROM trials; DROP VIEW trials",
    ],
)
def test_writes_fail_and_the_store_is_unchanged(runs, env, tmp_path, sql):
    store = runs / "alpha"
    before = snapshot(store)
    out = store / "leak.csv"
    result = qgen(env, "query", "--results-dir", str(store), sql.format(out=out))
    assert result.returncode == 2  # the SQL is the user's input: a refusal is a usage error
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert snapshot(store) == before


def test_bad_query_prints_duckdb_message_on_one_line(runs, env):
    result = qgen(env, "query", "--results-dir", str(runs), "SELECT nope FROM trials")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nope" in lines[0]


def test_missing_and_empty_store_say_so(tmp_path, env):
    missing = qgen(env, "query", "--results-dir", str(tmp_path / "nowhere"), "SELECT 1")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    fresh = tmp_path / "fresh"
    (fresh / "trials").mkdir(parents=True)
    empty = qgen(env, "query", "--results-dir", str(fresh), "SELECT * FROM trials")
    assert empty.returncode == 0, empty.stderr
    assert "(0 rows)" in empty.stdout and "no finished trials" in empty.stderr


def test_needs_a_sweep_or_a_results_dir(env, tmp_path):
    result = qgen(env, "query", "SELECT 1", cwd=tmp_path)
    assert result.returncode == 2 and "--results-dir" in result.stderr
