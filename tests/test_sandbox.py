"""User SQL in the sandbox: `query` statements and `--where` conditions over a real store.

Attacks that worked before the sandbox covered every door: a --where that read a file into its
error message or wrote a Parquet file into the store, a DELETE inside a CTE, EXPLAIN ANALYZE
behind a comment, a statement that never returns.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest
from cli_helpers import run_cli, snapshot
from test_analysis import build_known_store

from qgen_sweep.analysis import connect
from qgen_sweep.analysis.db import memory_limit_bytes
from qgen_sweep.analysis.sandbox import read_only_statement, select_where, where_expression
from qgen_sweep.errors import UsageError


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch) -> Path:
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("QGEN_SWEEP_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def known(tmp_path) -> Path:
    build_known_store(tmp_path / "known", sweep="known")
    return tmp_path / "known"


def _measure(root: Path, *args: str):
    return run_cli("measure", "known", "--results-dir", str(root), "--backend", "local", *args)


def test_where_cannot_read_a_file_into_its_message(known, tmp_path):
    secret = tmp_path / "secret.tsv"
    secret.write_text("the-secret-line\n")
    where = (f"CAST((SELECT string_agg(column0, '|') FROM read_csv('{secret}', header=false, "
             "sep='\t')) AS INTEGER) = 1")
    result = _measure(known, "--where", where)
    assert result.code == 2, result.stderr
    assert "the-secret-line" not in result.stderr + result.stdout
    assert len(result.error_lines) == 1 and not result.crashed


def test_where_cannot_inject_statements_into_the_store(known):
    before = snapshot(known)
    planted = known / "trials" / "bits=2" / "x.parquet"
    where = (f"FALSE); COPY (SELECT 1 AS x) TO '{planted}'; "
             "SELECT trial_id FROM trials WHERE (FALSE")
    result = _measure(known, "--where", where)
    assert result.code == 2 and "--where must be one SQL condition" in result.stderr
    assert not planted.exists() and snapshot(known) == before


def test_where_selects_rows_of_the_view_as_one_expression(known):
    con = connect(known)
    rows = select_where(con, "trials", "bits = 2 AND lr > 0.06", ["trial_id", "bits", "lr"],
                        condition="status = 'done'", order_by="trial_id")
    assert [(r["bits"], r["lr"]) for r in rows] == [(2, 0.1)]
    assert len(select_where(con, "trials", None, ["trial_id"])) == 11
    assert select_where(con, "trials", "precision = 'FP32'", ["bits"])[0] == {"bits": 32}
    with pytest.raises(UsageError, match="one SQL condition"):
        where_expression("bits = 2; DROP VIEW trials")
    with pytest.raises(UsageError, match="on the trials columns"):
        select_where(con, "trials", "bitz = 2", ["trial_id"])
    with pytest.raises(UsageError, match="read-only"):
        where_expression("EXISTS (WITH d AS (DELETE FROM raw_trials RETURNING *) SELECT 1)")


@pytest.mark.parametrize(
    "sql",
    [
        "WITH d AS (DELETE FROM raw_trials RETURNING *) SELECT count(*) FROM d",
        "WITH d AS MATERIALIZED (INSERT INTO raw_trials SELECT * FROM raw_trials RETURNING 1) "
        "SELECT count(*) FROM d",
        "WITH u AS (UPDATE raw_trials SET gap = 0 RETURNING *) SELECT * FROM trials",
        "EXPLAIN /* c */ ANALYZE DELETE FROM raw_trials",
        "EXPLAIN ANALYZE -- comment\n DELETE FROM raw_trials",
        "EXPLAIN (FORMAT json) DELETE FROM raw_trials",
        "EXPLAIN ANALYZE WITH d AS (DELETE FROM raw_trials RETURNING *) SELECT * FROM d",
    ],
)
def test_query_refuses_writes_hidden_in_ctes_and_explain(known, sql):
    before = snapshot(known)
    result = run_cli("query", "--results-dir", str(known), sql)
    assert result.code == 2, result.stdout + result.stderr
    assert not result.crashed and len(result.error_lines) == 1
    assert "read-only" in result.stderr
    assert snapshot(known) == before
    with pytest.raises(UsageError):
        read_only_statement(sql)


def test_explain_of_a_read_still_works(known):
    result = run_cli("query", "--results-dir", str(known),
                     "EXPLAIN /* plan */ ANALYZE SELECT count(*) FROM trials", "--format", "csv")
    assert result.code == 0, result.stderr
    assert "explain_key" in result.stdout.splitlines()[0] or "analyzed" in result.stdout.lower()


def test_a_statement_that_never_returns_is_stopped(known):
    result = run_cli("query", "--results-dir", str(known),
                     "SELECT sum(hash(range)) FROM range(100000000000)", "--timeout", "1")
    assert result.code == 2, result.stderr
    assert "time limit" in result.stderr and len(result.error_lines) == 1


def test_the_connection_has_a_memory_limit_under_the_machines(known):
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    con = connect(known)
    limit = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    assert memory_limit_bytes() <= total // 3
    assert limit.endswith("GiB") or limit.endswith("MiB")
    amount = float(limit.split()[0]) * (1 << 30 if limit.endswith("GiB") else 1 << 20)
    assert amount <= total // 3
    with pytest.raises(duckdb.Error):  # locked: a query cannot raise it back
        con.execute("SET memory_limit = '100GiB'")


def test_output_rows_are_capped_by_default_and_by_limit(known):
    sql = "SELECT range AS i FROM range(1500)"
    capped = run_cli("query", "--results-dir", str(known), sql, "--format", "csv")
    assert capped.code == 0, capped.stderr
    assert len(capped.stdout.splitlines()) == 1 + 1000
    assert "--limit" in capped.stderr
    everything = run_cli("query", "--results-dir", str(known), sql, "--format", "csv",
                         "--limit", "0")
    assert len(everything.stdout.splitlines()) == 1 + 1500 and "--limit" not in everything.stderr
    five = run_cli("query", "--results-dir", str(known), sql, "--format", "json", "--limit", "5")
    assert five.stdout.count('"i"') == 5


@pytest.mark.parametrize("sql", ["SELECT 'caf\udce9'", "SELECT 1\x00; DELETE FROM raw_trials"])
def test_text_duckdb_would_misread_is_refused(known, sql):
    result = run_cli("query", "--results-dir", str(known), sql)
    assert result.code == 2 and not result.crashed, result.stderr
    assert "not SQL text" in result.stderr
    where = run_cli("measure", "known", "--results-dir", str(known), "--backend", "local",
                    "--where", "bits = 2\x00 OR TRUE")
    assert where.code == 2 and "not SQL text" in where.stderr
    assert not (known / "measure_failures").exists()  # nothing ran


def test_an_output_path_that_cannot_be_written_is_a_usage_error(known, tmp_path):
    (tmp_path / "a-file").write_text("x")
    for output in (tmp_path / "missing" / "x.csv", tmp_path / "a-file" / "x.csv"):
        for fmt in ("csv", "parquet"):
            result = run_cli("query", "--results-dir", str(known), "SELECT 1 AS x",
                             "--format", fmt, "--output", str(output))
            assert result.code == 2 and not result.crashed, result.stderr
            assert "--output" in result.stderr and len(result.error_lines) == 1


def test_deep_expressions_are_checked_without_a_traceback(known):
    deep_but_fine = "SELECT " + "1+" * 900 + "1 AS x"
    result = run_cli("query", "--results-dir", str(known), deep_but_fine, "--format", "csv")
    assert result.code == 0, result.stderr
    assert result.stdout.splitlines() == ["x", "901"]
    for sql in ("SELECT " + "(" * 5000 + "1" + ")" * 5000, "SELECT " + "1+" * 5000 + "1"):
        too_deep = run_cli("query", "--results-dir", str(known), sql)
        assert too_deep.code == 2 and not too_deep.crashed and len(too_deep.error_lines) == 1
    where = run_cli("measure", "known", "--results-dir", str(known), "--backend", "local",
                    "--where", "+".join(["1"] * 5000) + " = 2")
    assert where.code == 2 and not where.crashed and len(where.stderr) < 600
