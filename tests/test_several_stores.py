"""A results folder holding several stores of the same sweep (replicates, reruns, copies).

Before: their rows were merged by sweep name, so 4 complete copies of one store read as one
sweep with every trial id four times (plan joins multiplied, pairs counted four times). Now a
store is told apart by its path (and shows its spec hash), and paired statistics refuse a trial
id that appears twice.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import run_cli
from test_analysis import build_known_store

from qgen_sweep.analysis import connect
from qgen_sweep.store import ResultsStore

COPIES = ("a", "b", "c", "d")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch) -> Path:
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("QGEN_SWEEP_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def runs(tmp_path) -> Path:
    """runs/{a,b,c,d}: four copies of the known store, all of sweep "tiny"; a and b have a
    sweep.toml naming their spec hash (b another one, as if launched with other overrides)."""
    first = tmp_path / "runs" / "a"
    build_known_store(first, sweep="tiny")
    for name in COPIES[1:]:
        shutil.copytree(first, tmp_path / "runs" / name)
    for name, spec_hash in (("a", "1111aaaa2222bbbb"), ("b", "3333cccc4444dddd")):
        ResultsStore(tmp_path / "runs" / name).write_spec(
            f"# sweep: tiny\n# spec hash: {spec_hash}\ndescription = \"x\"\n")
    return tmp_path / "runs"


def _report(folder: Path) -> dict:
    result = run_cli("report", "--results-dir", str(folder), "--format", "json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def test_each_store_is_counted_on_its_own(runs):
    report = _report(runs)
    single = _report(runs / "a")
    assert len(report["progress"]) == 4
    for progress in report["progress"]:
        assert (progress["finished"], progress["planned"]) == (11, 13), progress
    assert sorted(p["sweep"] for p in report["progress"]) == [f"tiny@{n}" for n in COPIES]
    for row in report["paired"]:
        twin = next(r for r in single["paired"]
                    if (r["bits"], r["metric"]) == (row["bits"], row["metric"]))
        assert row["n_pairs"] == twin["n_pairs"] and row["mean_diff"] == twin["mean_diff"]
    n_table1 = {(r["sweep"], r["bits"]): r["n"] for r in report["table1"]}
    assert all(n_table1[(f"tiny@{c}", 32)] == 3 for c in COPIES)


def test_stores_view_names_path_and_spec_hash(runs):
    con = connect(runs)
    rows = con.execute("SELECT sweep, name, path, spec_hash FROM stores ORDER BY sweep").fetchall()
    assert [r[0] for r in rows] == [f"tiny@{n}" for n in COPIES]
    assert {r[1] for r in rows} == {"tiny"}
    assert [Path(r[2]) for r in rows] == [(runs / n).resolve() for n in COPIES]
    assert [r[3] for r in rows] == ["1111aaaa2222bbbb", "3333cccc4444dddd", None, None]
    grouped = con.execute("SELECT sweep, count(*) FROM trials GROUP BY ALL").fetchall()
    assert sorted(grouped) == [(f"tiny@{n}", 11) for n in COPIES]
    markdown = run_cli("report", "--results-dir", str(runs)).stdout
    assert f"store: {(runs / 'a').resolve()} (spec hash 1111aaaa2222bbbb)" in markdown


def test_a_single_store_or_distinct_names_keep_the_plain_sweep_name(runs, tmp_path):
    assert [p["sweep"] for p in _report(runs / "a")["progress"]] == ["tiny"]
    mixed = tmp_path / "mixed"
    build_known_store(mixed / "one", sweep="alpha")
    build_known_store(mixed / "two", sweep="beta")
    assert [p["sweep"] for p in _report(mixed)["progress"]] == ["alpha", "beta"]


def test_a_trial_id_twice_in_one_store_is_refused_by_the_paired_statistics(runs):
    store = ResultsStore(runs / "a")
    original = next(p for p in store.files("trials") if "bits=32" in str(p))
    shutil.copy(original, original.with_name(f"copy-{original.name}"))
    result = run_cli("report", "--results-dir", str(runs / "a"))
    assert result.code == 1 and not result.crashed
    assert len(result.error_lines) == 1
    assert original.stem in result.stderr and "2 times" in result.stderr
