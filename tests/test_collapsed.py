"""Collapsed runs: trials that trained to the end at chance level or with a huge finite loss.

The store is the known store of test_analysis plus three finished trials of a fourth
configuration (c0 at seed 7): FP32 done normally, Int4 collapsed by its loss (3e11 nats, as on the
full digits grid), Int2 collapsed by its accuracy (0.1 = chance on 10 classes). By default they
are counted and kept out of Table 1's means and the paired statistics; --include-collapsed keeps
them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cli_helpers import run_cli
from test_analysis import _trial_row, build_known_store, config

from qgen_sweep.analysis import connect
from qgen_sweep.collapse import is_collapsed
from qgen_sweep.measures.select import eligible_trials
from qgen_sweep.store import (
    PLAN_SCHEMA,
    ResultsStore,
    rows_to_table,
    sweep_status,
    write_table_atomic,
)

# (train_acc, test_acc, train_loss, test_loss, l2_norm)
EXTRA = {
    32: (0.95, 0.70, 0.05, 0.60, 10.0),
    4: (0.12, 0.10, 3e11, 4e11, 10.0),  # collapsed by its loss
    2: (0.10, 0.10, 2.30, 2.31, 10.0),  # collapsed by its accuracy (chance)
}


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch) -> Path:
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("QGEN_SWEEP_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def store(tmp_path) -> Path:
    root = tmp_path / "tiny"
    known = build_known_store(root)
    plan = pq.read_table(known.plan_path).to_pylist()
    for bits, values in EXTRA.items():
        row = _trial_row(config(0, bits, seed=7), "tiny", values, lr_index=0)
        known.write_trial(row)
        plan.append({name: row.get(name) for name in PLAN_SCHEMA.names} | {"position": len(plan)})
    write_table_atomic(known.plan_path, rows_to_table(plan, PLAN_SCHEMA))
    return root


def _report(root: Path, *args: str) -> dict:
    result = run_cli("report", "--results-dir", str(root), "--format", "json", *args)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def _row(rows: list[dict], **keys) -> dict:
    found = [r for r in rows if all(r[k] == v for k, v in keys.items())]
    assert len(found) == 1, (keys, found)
    return found[0]


def test_the_views_and_status_show_collapsed_as_its_own_status(store):
    con = connect(store)
    rows = con.execute("SELECT bits, status, collapsed FROM trials WHERE seed = 7 "
                       "ORDER BY bits").fetchall()
    assert rows == [(2, "collapsed", True), (4, "collapsed", True), (32, "done", False)]
    status = sweep_status(ResultsStore(store))
    assert status.by_bits[4]["collapsed"] == 1 and status.by_bits[2]["collapsed"] == 1
    assert status.by_bits[4]["done"] == 2 and status.totals["collapsed"] == 2
    printed = run_cli("status", "tiny", "--results-dir", str(store), "--json")
    assert printed.code == 0, printed.stderr
    assert json.loads(printed.stdout)["totals"]["collapsed"] == 2
    table = run_cli("status", "tiny", "--results-dir", str(store))
    assert "collapsed" in table.stdout


def test_table1_and_the_paired_statistics_leave_them_out_by_default(store):
    report = _report(store)
    int4 = _row(report["table1"], bits=4)
    assert (int4["n"], int4["collapsed"], int4["diverged"]) == (2, 1, 1)
    assert int4["train_loss_mean"] == pytest.approx((0.14 + 0.26) / 2)  # no 3e11 in the mean
    assert _row(report["table1"], bits=32)["n"] == 4  # the seed-7 FP32 twin is a normal result
    gap4 = _row(report["paired"], bits=4, metric="gap")
    assert gap4["n_pairs"] == 2 and abs(gap4["mean_diff"]) < 1
    assert report["collapsed"]["by_sweep"] == {"tiny": 2}
    assert report["collapsed"]["included"] is False
    assert "1.5 x chance" in report["collapsed"]["rule"]
    progress = report["progress"][0]
    assert (progress["done"], progress["collapsed"], progress["finished"]) == (11, 2, 14)
    assert (progress["planned"], progress["pending"]) == (16, 1)


def test_include_collapsed_keeps_them_and_says_so(store):
    report = _report(store, "--include-collapsed")
    int4 = _row(report["table1"], bits=4)
    assert (int4["n"], int4["collapsed"]) == (3, 1)
    assert int4["train_loss_mean"] == pytest.approx((0.14 + 0.26 + 3e11) / 3)
    assert _row(report["paired"], bits=4, metric="gap")["n_pairs"] == 3
    assert report["collapsed"]["included"] is True


def test_every_table_heading_counts_them(store):
    text = run_cli("report", "--results-dir", str(store)).stdout
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert len(headings) == 3 and all("2 collapsed trials excluded" in h for h in headings)
    assert "(done 11, collapsed 2, diverged 1, failed 1, pending 1)" in text
    kept = run_cli("report", "--results-dir", str(store), "--include-collapsed").stdout
    assert all("2 collapsed trials included" in line for line in kept.splitlines()
               if line.startswith("## "))


def test_measure_does_not_pick_collapsed_trials(store):
    picked = {(t["bits"], t["trial_id"]) for t in eligible_trials(ResultsStore(store))}
    assert (4, config(0, 4, seed=7).trial_id) not in picked
    assert (32, config(0, 32, seed=7).trial_id) in picked


@pytest.mark.parametrize(("dataset", "acc", "loss", "expected"), [
    ("digits", 0.15, 1.0, True),  # exactly 1.5 x chance
    ("digits", 0.1501, 1.0, False),
    ("digits", 0.5, 10 * math.log(10) * 1.0001, True),
    ("digits", 0.5, 10 * math.log(10) * 0.9999, False),
    ("cifar100", 0.015, 1.0, True),
    ("cifar100", 0.016, 46.0, False),  # 10 ln(100) = 46.05
    ("cifar100", 0.5, 46.1, True),
    ("digits", math.nan, math.nan, False),  # diverged trials keep their own status
    ("digits", None, None, False),
    ("mnist", 0.0, 1e12, False),  # no chance level known for a dataset qgen-sweep lacks
])
def test_python_rule_and_sql_macro_agree(dataset, acc, loss, expected):
    assert is_collapsed(dataset, acc, loss) is expected
    con = connect_empty()
    got = con.execute("SELECT is_collapsed($d, $a::DOUBLE, $l::DOUBLE)",
                      {"d": dataset, "a": acc, "l": loss}).fetchall()[0][0]
    assert got is expected


def connect_empty():
    """A bare analysis-style connection with the collapse macros (no store needed)."""
    import duckdb

    from qgen_sweep.collapse import collapsed_sql

    con = duckdb.connect(":memory:")
    for statement in collapsed_sql():
        con.execute(statement)
    return con
