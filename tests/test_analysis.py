"""Analysis layer on a store the tests write with ResultsStore: known values, hand-computed results.

The known store (`build_known_store`) holds three configurations (c0, c1 at depth 2 x width 8,
c2 at depth 3 x width 8) at each precision:

    FP32  c0 c1 c2 done
    Int8  c0 c1 c2 done
    Int4  c0 c1 done, c2 diverged
    Int2  c0 c1 done, c2 failed (two failed attempts, no final row)
    plus one planned, never started FP32 trial (seed 1), and a failed first attempt of FP32 c0
    that succeeded on its second attempt (it must not count as failed).

Every expected number below was worked out by hand from these values (sample sd, n - 1).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from qgen_sweep.analysis import connect, find_stores, run_query, stats
from qgen_sweep.analysis.db import kinds_for_query, sql_file
from qgen_sweep.analysis.report import build_report, render
from qgen_sweep.errors import QGenError, StoreError
from qgen_sweep.store import PLAN_SCHEMA, ResultsStore, rows_to_table, write_table_atomic
from qgen_sweep.trial.config import TrialConfig

SQRT2 = math.sqrt(2)

# (depth, width, lr) of c0, c1, c2
CONFIGS = ((2, 8, 0.1), (2, 8, 0.05), (3, 8, 0.1))
# bits -> per config: (train_acc, test_acc, train_loss, test_loss, l2_norm) or "diverged"/"failed"
VALUES = {
    32: [
        (0.90, 0.60, 0.10, 0.50, 10.0),
        (0.80, 0.50, 0.20, 0.70, 12.0),
        (0.70, 0.40, 0.30, 0.90, 14.0),
    ],
    8: [
        (0.89, 0.61, 0.11, 0.50, 9.0),
        (0.79, 0.52, 0.22, 0.70, 11.0),
        (0.69, 0.37, 0.33, 0.90, 13.0),
    ],
    4: [(0.86, 0.58, 0.14, 0.50, 8.0), (0.76, 0.51, 0.26, 0.70, 10.0), "diverged"],
    2: [(0.80, 0.55, 0.20, 0.65, 5.0), (0.50, 0.44, 0.50, 0.60, 7.0), "failed"],
}
LAYERS = ["features.0.conv", "features.1.conv", "head.conv"]


def config(index: int, bits: int, seed: int = 0, epochs: int = 3) -> TrialConfig:
    depth, width, lr = CONFIGS[index]
    return TrialConfig("digits", bits, "sgd", lr, 1e-4, depth, width, epochs=epochs, seed=seed)


def _trial_row(cfg: TrialConfig, sweep: str, values, lr_index: int) -> dict:
    row = {name: getattr(cfg, name) for name in PLAN_SCHEMA.names if hasattr(cfg, name)}
    row |= {
        "trial_id": cfg.trial_id,
        "sweep": sweep,
        "lr_index": lr_index,
        "config_json": cfg.canonical_json(),
        "engine": "single",
        "attempts": 1,
        "epochs_run": cfg.epochs,
        "seconds": 1.0,
    }
    if values == "diverged":
        nan = math.nan
        return row | {
            "status": "diverged",
            "diverged_epoch": 2,
            "train_acc": nan,
            "test_acc": nan,
            "train_loss": nan,
            "test_loss": nan,
            "gap": nan,
            "l2_norm": nan,
            "best_epoch": 1,
        }
    train_acc, test_acc, train_loss, test_loss, l2 = values
    row |= {
        "status": "done",
        "train_acc": train_acc,
        "test_acc": test_acc,
        "train_loss": train_loss,
        "test_loss": test_loss,
        "gap": test_loss - train_loss,
        "l2_norm": l2,
        "best_epoch": cfg.epochs,
    }
    if cfg.bits != 32:
        # step size of layer k = bits-dependent base x (k + 1): Figure 1 has a known shape
        row |= {
            "step_size_layers": LAYERS,
            "step_sizes": [0.01 * (k + 1) / cfg.bits for k in range(3)],
        }
    return row


def _failure(cfg: TrialConfig, attempt: int) -> dict:
    return {
        "trial_id": cfg.trial_id,
        "bits": cfg.bits,
        "attempt": attempt,
        "error_type": "RuntimeError",
        "message": "CUDA error: injected",
        "host": "test",
    }


def build_known_store(root: Path, sweep: str = "tiny") -> ResultsStore:
    """Write the known store described in the module docstring; return it."""
    store = ResultsStore(root)
    plan = []
    for bits, per_config in VALUES.items():
        for index, values in enumerate(per_config):
            cfg = config(index, bits)
            plan.append(cfg)
            if values == "failed":
                store.write_failure(_failure(cfg, 1))
                store.write_failure(_failure(cfg, 2))
                continue
            store.write_trial(_trial_row(cfg, sweep, values, lr_index=(0, 1, 0)[index]))
            if values != "diverged":
                # epoch k: train loss = final + (3 - k) / 10, test loss = final test loss
                store.write_epochs(
                    cfg.trial_id,
                    bits,
                    [
                        {
                            "epoch": k,
                            "train_loss": values[2] + (3 - k) / 10,
                            "train_acc": 0.5,
                            "test_loss": values[3],
                            "test_acc": 0.5,
                            "lr": cfg.lr,
                            "seconds": 0.1,
                        }
                        for k in (1, 2, 3)
                    ],
                )
    store.write_failure(_failure(config(0, 32), 1))  # FP32 c0: failed once, then done
    plan.append(config(0, 32, seed=1))  # planned, never started
    rows = [
        {name: getattr(c, name) for name in PLAN_SCHEMA.names if hasattr(c, name)}
        | {
            "trial_id": c.trial_id,
            "sweep": sweep,
            "position": i,
            "lr_index": 0,
            "config_json": c.canonical_json(),
        }
        for i, c in enumerate(plan)
    ]
    write_table_atomic(store.plan_path, rows_to_table(rows, PLAN_SCHEMA))
    return store


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch) -> Path:
    """A private analysis cache per test (never the user's ~/.cache)."""
    path = tmp_path_factory.mktemp("analysis-cache")
    monkeypatch.setenv("QGEN_SWEEP_CACHE_DIR", str(path))
    return path


@pytest.fixture
def known(tmp_path) -> Path:
    build_known_store(tmp_path / "tiny")
    return tmp_path / "tiny"


def _by(rows: list[dict], **keys) -> dict:
    found = [r for r in rows if all(r[k] == v for k, v in keys.items())]
    assert len(found) == 1, (keys, found)
    return found[0]


# -- views ------------------------------------------------------------------------------------


def test_views_hold_the_store_rows(known):
    con = connect(known)
    assert con.execute("SELECT count(*), count(DISTINCT sweep) FROM trials").fetchall() == [(11, 1)]
    assert con.execute("SELECT min(sweep) FROM epochs").fetchall() == [("tiny",)]
    assert con.execute("SELECT count(*) FROM epochs").fetchall() == [(30,)]  # 10 done x 3
    assert con.execute("SELECT count(*) FROM failures").fetchall() == [(3,)]
    states = con.execute("SELECT state, count(*) FROM plan GROUP BY ALL ORDER BY ALL").fetchall()
    assert states == [("diverged", 1), ("done", 10), ("failed", 1), ("pending", 1)]
    precisions = con.execute("SELECT DISTINCT bits, precision FROM trials ORDER BY bits").fetchall()
    assert precisions == [(2, "Int2"), (4, "Int4"), (8, "Int8"), (32, "FP32")]


def test_accuracies_stay_fractions_in_views(known):
    con = connect(known)
    rows = con.execute("SELECT train_acc FROM trials WHERE bits = 32 ORDER BY 1").fetchall()
    assert rows == [(0.7,), (0.8,), (0.9,)]


def test_folder_of_sweeps_gives_every_sweep_with_its_name(tmp_path):
    build_known_store(tmp_path / "runs" / "alpha", sweep="alpha")
    build_known_store(tmp_path / "runs" / "beta", sweep="beta")
    assert [s.sweep for s in find_stores(tmp_path / "runs")] == ["alpha", "beta"]
    con = connect(tmp_path / "runs")
    counts = con.execute("SELECT sweep, count(*) FROM trials GROUP BY 1 ORDER BY 1").fetchall()
    assert counts == [("alpha", 11), ("beta", 11)]
    epochs = con.execute("SELECT sweep, count(*) FROM epochs GROUP BY 1 ORDER BY 1").fetchall()
    assert epochs == [("alpha", 30), ("beta", 30)]


def test_missing_and_empty_results_say_so(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        connect(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="no sweep results"):
        connect(tmp_path / "empty")


def test_store_with_only_a_spec_has_empty_views(tmp_path):
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "sweep.toml").write_text("name = 'fresh'\n")
    con = connect(tmp_path / "fresh")
    assert con.execute("SELECT count(*) FROM trials").fetchall() == [(0,)]
    assert con.execute("SELECT count(*) FROM plan").fetchall() == [(0,)]


def test_connection_cannot_touch_files(known, tmp_path):
    con = connect(known)
    before = _snapshot(known)
    for sql in (
        f"COPY trials TO '{tmp_path / 'x.csv'}'",
        f"ATTACH '{tmp_path / 'x.db'}'",
        f"SELECT * FROM read_parquet('{known}/plan.parquet')",
        "SET enable_external_access = true",
    ):
        with pytest.raises(Exception, match="Permission|locked|disabled"):
            con.execute(sql).fetchall()
    assert _snapshot(known) == before
    assert not (tmp_path / "x.csv").exists()


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM trials",
        "CREATE TABLE t AS SELECT 1",
        "COPY trials TO 'x.csv'",
        "DROP VIEW trials",
        "INSERT INTO raw_trials SELECT * FROM raw_trials",
        "SELECT 1; SELECT 2",
        "EXPLAIN ANALYZE DELETE FROM raw_trials",
    ],
)
def test_run_query_refuses_anything_but_reading(known, sql):
    con = connect(known)
    with pytest.raises(QGenError, match="read-only|exactly one"):
        run_query(con, sql)
    assert con.execute("SELECT count(*) FROM trials").fetchall() == [(11,)]


def test_run_query_reports_duckdb_errors_on_one_line(known):
    with pytest.raises(QGenError) as error:
        run_query(connect(known), "SELECT no_such_column FROM trials")
    assert "no_such_column" in str(error.value) and "\n" not in str(error.value)


def test_kinds_for_query_loads_only_what_is_named():
    assert kinds_for_query("SELECT bits, avg(gap) FROM trials GROUP BY bits") == {"trials"}
    assert kinds_for_query("SELECT * FROM epochs") == {"epochs"}
    assert kinds_for_query("SELECT state FROM plan") == {"plan", "trials", "failures", "epochs"}


def test_unreadable_file_is_skipped_with_a_warning(known, caplog):
    victim = next(ResultsStore(known).files("trials"))
    victim.write_bytes(victim.read_bytes()[:40])  # truncated by hand
    con = connect(known)
    assert con.execute("SELECT count(*) FROM trials").fetchall() == [(10,)]
    assert any("does not read back" in r.message for r in caplog.records)


# -- cache ------------------------------------------------------------------------------------


def test_cache_sees_new_rewritten_and_deleted_files(known, cache_dir):
    store = ResultsStore(known)
    assert connect(known).execute("SELECT count(*) FROM trials").fetchall() == [(11,)]
    assert list(cache_dir.rglob("trials.v*.parquet"))  # the cache was written
    cfg = config(0, 32, seed=1)  # the pending trial finishes
    store.write_trial(_trial_row(cfg, "tiny", (0.5, 0.5, 1.0, 1.5, 1.0), 0))
    old = config(0, 8)  # a trial's row is rewritten with a new value
    row = _trial_row(old, "tiny", (0.89, 0.61, 0.11, 0.50, 9.0), 0) | {"l2_norm": 99.0}
    os.utime(store.write_trial(row), ns=(1, 1))  # even with an older mtime (size differs less)
    store.path("trials", config(1, 4).trial_id, 4).unlink()  # a result removed
    con = connect(known)
    assert con.execute("SELECT count(*) FROM trials").fetchall() == [(11,)]
    assert con.execute(
        f"SELECT l2_norm FROM trials WHERE trial_id = '{old.trial_id}'"
    ).fetchall() == [(99.0,)]
    assert con.execute(
        f"SELECT count(*) FROM trials WHERE trial_id = '{cfg.trial_id}'"
    ).fetchall() == [(1,)]


def test_unwritable_cache_still_loads(known, monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("QGEN_SWEEP_CACHE_DIR", str(blocker))
    assert connect(known).execute("SELECT count(*) FROM trials").fetchall() == [(11,)]


def _write_measures(store_root: Path) -> None:
    """A measures file per done trial (MEASURE_SCHEMA), pacbayes_init = l2_norm / 10."""
    from qgen_sweep.measures.schema import MEASURE_SCHEMA

    con = connect(store_root)
    done = con.execute("SELECT trial_id, bits, l2_norm FROM trials WHERE status = 'done'")
    for trial_id, bits, l2 in done.fetchall():
        row = {
            "trial_id": trial_id,
            "sweep": "tiny",
            "dataset": "digits",
            "bits": bits,
            "families": "pacbayes",
            "pacbayes_init": l2 / 10,
        }
        path = store_root / "measures" / f"bits={bits}" / f"{trial_id}.parquet"
        write_table_atomic(path, rows_to_table([row], MEASURE_SCHEMA))


def test_measures_files_are_loaded_and_reported(known):
    _write_measures(known)
    con = connect(known)
    rows = con.execute("SELECT sweep, count(*) FROM raw_measures GROUP BY 1").fetchall()
    assert rows == [("tiny", 10)]
    assert con.execute("SELECT count(*) FROM measures").fetchall() == [(10,)]
    report = build_report(known)
    assert {"table1", "paired", "table2", "table3", "kendall"} <= set(report)
    (row,) = [r for r in report["table3"] if r["measure"] == "pacbayes_init"]
    assert row["FP32"] == pytest.approx(1.2)  # (10 + 12 + 14) / 3 / 10
    assert row["Int2"] == pytest.approx(0.6)  # (5 + 7) / 2 / 10


def test_report_without_measures_has_no_measures_sections(known):
    report = build_report(known)
    assert "table3" not in report and "kendall" not in report


# -- statistics -------------------------------------------------------------------------------


def test_wilcoxon_matches_exact_hand_values():
    assert stats.wilcoxon_p([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)  # all 5 positive
    assert stats.wilcoxon_p([1, -2, 3, 4, 5]) == pytest.approx(6 / 32)  # W- = 2
    assert math.isnan(stats.wilcoxon_p([0.0, 0.0]))  # undefined: no non-zero difference
    assert math.isnan(stats.wilcoxon_p([]))


def test_median_difference_is_robust_to_a_collapsed_run():
    summary = stats.paired_summary([0.1, 0.2, 0.3, 1e9])  # one run with a huge finite loss
    assert summary["median_diff"] == pytest.approx(0.25)
    assert summary["ci_high"] > 1e8  # the mean's interval is at the mercy of that run
    assert math.isnan(stats.paired_summary([])["median_diff"])


def test_bootstrap_is_seeded_and_degenerate_cases_are_exact():
    diffs = [0.3, -0.1, 0.2, 0.5, 0.05, -0.2, 0.4]
    assert stats.bootstrap_ci(diffs) == stats.bootstrap_ci(diffs)
    assert stats.bootstrap_ci(diffs) != stats.bootstrap_ci(diffs, seed=1)
    low, high = stats.bootstrap_ci(diffs)
    assert min(diffs) < low < sum(diffs) / len(diffs) < high < max(diffs)
    assert stats.bootstrap_ci([0.25] * 9) == (0.25, 0.25)
    assert stats.N_RESAMPLES >= 2000


# -- report numbers ---------------------------------------------------------------------------

TABLE1 = {  # bits: n, diverged, failed, then (mean, sd) of train acc %, test acc %, losses, gap
    32: (3, 0, 0, (80, 10), (50, 10), (0.2, 0.1), (0.7, 0.2), (0.5, 0.1)),
    8: (3, 0, 0, (79, 10), (50, math.sqrt(147)), (0.22, 0.11), (0.7, 0.2), (0.48, 0.09)),
    4: (
        2,
        1,
        0,
        (81, 10 / SQRT2),
        (54.5, 7 / SQRT2),
        (0.2, 0.12 / SQRT2),
        (0.6, 0.2 / SQRT2),
        (0.4, 0.08 / SQRT2),
    ),
    2: (
        2,
        0,
        1,
        (65, 30 / SQRT2),
        (49.5, 11 / SQRT2),
        (0.35, 0.3 / SQRT2),
        (0.625, 0.05 / SQRT2),
        (0.275, 0.35 / SQRT2),
    ),
}
METRICS = ("train_acc", "test_acc", "train_loss", "test_loss", "gap")


def test_table1_equals_hand_computed(known):
    table1 = build_report(known)["table1"]
    assert [r["bits"] for r in table1] == [32, 8, 4, 2]  # FP32, Int8, Int4, Int2
    assert [r["precision"] for r in table1] == ["FP32", "Int8", "Int4", "Int2"]
    for row in table1:
        n, diverged, failed, *pairs = TABLE1[row["bits"]]
        assert (row["n"], row["diverged"], row["failed"]) == (n, diverged, failed)
        for metric, (mean, sd) in zip(METRICS, pairs, strict=True):
            assert row[f"{metric}_mean"] == pytest.approx(mean, rel=1e-9, abs=1e-12), metric
            assert row[f"{metric}_std"] == pytest.approx(sd, rel=1e-9, abs=1e-12), metric
    # gaps of the done trials: FP32 .4 .5 .6, Int8 .39 .48 .57, Int4 .36 .44, Int2 .45 .1
    medians = {32: 0.5, 8: 0.48, 4: 0.40, 2: 0.275}
    assert {r["bits"]: r["gap_median"] for r in table1} == pytest.approx(medians, abs=1e-12)


PAIRED = {  # (bits, metric): n_pairs, mean diff, exact two-sided Wilcoxon p, bootstrap CI
    (8, "gap"): (3, -0.02, 2 / 8, (-0.03, -0.01)),
    (8, "train_loss"): (3, 0.02, 2 / 8, (0.01, 0.03)),
    (8, "test_acc"): (3, 0.0, 1.0, (-3.0, 2.0)),
    (4, "gap"): (2, -0.05, 2 / 4, (-0.06, -0.04)),
    (4, "train_loss"): (2, 0.05, 2 / 4, (0.04, 0.06)),
    (4, "test_acc"): (2, -0.5, 1.0, (-2.0, 1.0)),
    (2, "gap"): (2, -0.175, 1.0, (-0.4, 0.05)),
    (2, "train_loss"): (2, 0.2, 2 / 4, (0.1, 0.3)),
    (2, "test_acc"): (2, -5.5, 2 / 4, (-6.0, -5.0)),
}


def test_paired_statistics_equal_hand_computed(known):
    paired = build_report(known)["paired"]
    assert len(paired) == len(PAIRED)
    for (bits, metric), (n, mean, p, (low, high)) in PAIRED.items():
        row = _by(paired, bits=bits, metric=metric)
        assert row["n_pairs"] == n
        assert row["mean_diff"] == pytest.approx(mean, abs=1e-12)
        # Int8 test acc diffs are +1, +2, -3 pp (mean 0, median 1); elsewhere median = mean.
        median = 1.0 if (bits, metric) == (8, "test_acc") else mean
        assert row["median_diff"] == pytest.approx(median, abs=1e-12)
        assert row["p_value"] == pytest.approx(p, abs=1e-12)
        # n <= 3 pairs: the extreme resample means each have probability >= 1/27 > 2.5%, so
        # the 2.5th and 97.5th percentiles of 2,000 resamples are the smallest and largest diff.
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), abs=1e-12)


TABLE2 = {  # (bits, depth, width): n, mean, sd (None: one model)
    (32, None, None): (3, 12, 2),
    (32, 2, 8): (2, 11, SQRT2),
    (32, 3, 8): (1, 14, None),
    (8, None, None): (3, 11, 2),
    (8, 2, 8): (2, 10, SQRT2),
    (8, 3, 8): (1, 13, None),
    (4, None, None): (2, 9, SQRT2),
    (4, 2, 8): (2, 9, SQRT2),
    (2, None, None): (2, 6, SQRT2),
    (2, 2, 8): (2, 6, SQRT2),
}


def test_table2_equals_hand_computed(known):
    table2 = build_report(known)["table2"]
    assert len(table2) == len(TABLE2)
    for (bits, depth, width), (n, mean, sd) in TABLE2.items():
        row = _by(table2, bits=bits, depth=depth, width=width)
        assert row["n"] == n and row["l2_norm_mean"] == pytest.approx(mean)
        assert row["l2_norm_std"] == (None if sd is None else pytest.approx(sd))


def test_progress_counts_the_partly_finished_sweep(known):
    (progress,) = build_report(known)["progress"]
    assert progress == {
        "sweep": "tiny",
        "finished": 11,
        "done": 10,
        "collapsed": 0,
        "diverged": 1,
        "failed": 1,
        "planned": 13,
        "pending": 1,
    }
    assert "11 of 13 trials finished" in render(build_report(known), "markdown")


def test_report_without_plan_counts_finished_plus_failed(known):
    (known / "plan.parquet").unlink()
    (progress,) = build_report(known)["progress"]
    assert (progress["finished"], progress["failed"], progress["planned"]) == (11, 1, 12)
    assert _by(build_report(known)["table1"], bits=2)["failed"] == 1


def test_step_size_figure_data(known):
    con = connect(known)
    rows = con.execute(sql_file("step_sizes.sql").read_text()).fetchall()
    # Int2 (c0, c1 done): layer k step size = 0.01 (k + 1) / 2 in both models
    int2 = [(r[3], r[4], r[5]) for r in rows if r[1] == 2]
    assert int2 == [
        (name, k + 1, pytest.approx(0.01 * (k + 1) / 2)) for k, name in enumerate(LAYERS)
    ]
