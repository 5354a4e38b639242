"""One consistent command line, as a user runs it: real `qgen-sweep` subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from qgen_sweep.spec import load_spec

QGEN = [sys.executable, "-m", "qgen_sweep.cli"]


def _run(*args: str, cwd: Path | None = None, timeout: float = 120):
    return subprocess.run([*QGEN, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env={**os.environ, "COLUMNS": "200"})


def _one_error_line(proc, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def _saved_store(root: Path, *overrides: str) -> None:
    """A results directory as `launch` leaves it before any trial ran: the resolved spec."""
    spec = load_spec("smoke", list(overrides))
    root.mkdir(parents=True)
    (root / "sweep.toml").write_text(
        f"# sweep: smoke\n# spec hash: {spec.spec_hash}\n{spec.to_toml()}")


def test_optuna_type_errors_use_the_right_article():
    proc = _run("validate", "smoke-tpe", "--set", "optuna.n_trials=2.5")
    _one_error_line(proc, "optuna.n_trials: must be an integer, but got 2.5")


def test_a_refused_launch_leaves_no_lock_file(tmp_path):
    root = tmp_path / "run"
    _saved_store(root, "train.epochs=1")
    before = sorted(p.name for p in root.iterdir())
    proc = _run("launch", "smoke", "--backend", "local", "--results-dir", str(root))
    _one_error_line(proc, "holds a different sweep")
    assert sorted(p.name for p in root.iterdir()) == before  # no .lock, no .lock.json


def test_a_missing_sweep_or_a_file_as_results_dir_is_bad_input(tmp_path):
    (tmp_path / "afile").write_text("not a results directory")
    _one_error_line(_run("report", "nosuch", cwd=tmp_path), "'runs/nosuch' does not exist",
                    "qgen-sweep list")
    for command in (["report"], ["query", "SELECT 1"], ["dashboard"], ["measure", "smoke"]):
        proc = _run(*command, "--results-dir", "afile", cwd=tmp_path)
        _one_error_line(proc, "afile' is a file, not a folder")
    _one_error_line(_run("measure", "smoke", "--results-dir", "gone", cwd=tmp_path),
                    "does not exist")


def _known(tmp_path: Path) -> Path:
    from test_analysis import build_known_store

    build_known_store(tmp_path / "tiny")
    return tmp_path / "tiny"


def _plan_states(root: Path) -> dict[str, int]:
    proc = _run("query", "--results-dir", str(root), "--format", "json",
                "SELECT state, count(*) AS n FROM plan GROUP BY ALL")
    assert proc.returncode == 0, proc.stderr
    return {row["state"]: row["n"] for row in json.loads(proc.stdout)}


def _status_totals(root: Path) -> dict[str, int]:
    proc = _run("status", "tiny", "--results-dir", str(root), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return {k: v for k, v in json.loads(proc.stdout)["totals"].items() if v and k != "planned"}


def test_status_and_the_plan_view_use_one_vocabulary(tmp_path):
    root = _known(tmp_path)
    pending = [row["trial_id"] for row in pq.read_table(root / "plan.parquet").to_pylist()
               if not any(root.glob(f"trials/*/{row['trial_id']}.parquet"))
               and not any(root.glob(f"failures/{row['trial_id']}-*.parquet"))]
    assert len(pending) == 1
    assert _plan_states(root) == _status_totals(root) == {"done": 10, "diverged": 1,
                                                          "failed": 1, "pending": 1}
    log = root / "checkpoints" / pending[0] / "attempts.json"
    log.parent.mkdir(parents=True)
    log.write_text('[{"attempt": 1, "host": "test"}]')  # started, then nobody ran it
    assert _plan_states(root) == _status_totals(root) == {"done": 10, "diverged": 1,
                                                          "failed": 1, "interrupted": 1}
    hold = ("import sys, time\nfrom qgen_sweep.store import SweepLock\n"
            "with SweepLock(sys.argv[1], 'launch tiny'):\n print('locked', flush=True)\n"
            " time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(root)], text=True,
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "locked"
        # a launch holds the lock: the started trial is running
        running = {"done": 10, "diverged": 1, "failed": 1, "running": 1}
        assert _plan_states(root) == _status_totals(root) == running
    finally:
        holder.kill()
        holder.wait()


def test_status_formats_share_the_vocabulary_of_query(tmp_path):
    root = _known(tmp_path)
    csv_out = _run("status", "tiny", "--results-dir", str(root), "--format", "csv")
    assert csv_out.returncode == 0, csv_out.stderr
    lines = csv_out.stdout.splitlines()
    assert lines[0] == "bits,planned,done,collapsed,diverged,failed,running,interrupted,pending"
    assert lines[-1] == "all,13,10,0,1,1,0,0,1"
    markdown = _run("status", "tiny", "--results-dir", str(root), "--format", "markdown")
    assert "| all | 13 | 10 | 0 | 1 | 1 | 0 | 0 | 1 |" in markdown.stdout
    old = _run("status", "tiny", "--results-dir", str(root), "--json")  # the older spelling
    new = _run("status", "tiny", "--results-dir", str(root), "--format", "json")
    assert old.returncode == new.returncode == 0
    assert json.loads(old.stdout) == json.loads(new.stdout)
    for command in ("status", "train", "measure", "robustness", "landscape"):
        shown = _run(command, "--help").stdout
        assert "--format [" in shown and "--json" not in shown, command
    for command in ("measure", "robustness", "landscape"):
        proc = _run(command, "tiny", "--results-dir", str(root), "--where", "bits = 99",
                    "--backend", "local", "--format", "json")
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)
        assert summary["failed"] == 0 and summary["results"] == []


def test_status_before_any_launch_shows_the_plan_pending(tmp_path):
    proc = _run("status", "smoke", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "holds no launch yet: all 16 planned trials are pending" in proc.stderr
    assert "`qgen-sweep launch smoke`" in proc.stderr
    data = json.loads(_run("status", "smoke", "--format", "json", cwd=tmp_path).stdout)
    assert data["launched"] is False and data["totals"]["pending"] == 16
    assert data["by_bits"]["2"] == {"planned": 4, "done": 0, "collapsed": 0, "diverged": 0,
                                    "failed": 0, "running": 0, "interrupted": 0, "pending": 4}
    assert not (tmp_path / "runs").exists()  # nothing written
    _one_error_line(_run("status", "nosuch", cwd=tmp_path), "no sweep named 'nosuch'")
    (tmp_path / "afile").write_text("x")
    _one_error_line(_run("status", "smoke", "--results-dir", "afile", cwd=tmp_path),
                    "is a file, not a folder")


ONE = ("--set", "grid.bits=[32]", "--set", "grid.width=[4]", "--set", 'grid.optimizer=["sgd"]',
       "--set", "train.epochs=2")


def test_dry_runs_of_a_finished_sweep_and_resume_with_set(tmp_path):
    root = str(tmp_path / "run")
    launched = _run("launch", "smoke", *ONE, "--backend", "local", "--results-dir", root)
    assert launched.returncode == 0, launched.stderr
    for command in (["launch", "smoke", *ONE], ["resume", "smoke"]):
        dry = _run(*command, "--dry-run", "--results-dir", root)
        assert dry.returncode == 0, dry.stderr
        assert "1 already done, 0 would run" in dry.stdout
        assert "all 1 trials already have results" in dry.stdout
        assert not [line for line in dry.stdout.splitlines() if "bits=32" in line]  # none listed
    (tmp_path / "run" / "trials" / "bits=32").rename(tmp_path / "moved")  # the trial is gone
    dry = _run("resume", "smoke", "--dry-run", "--set", "resources.max_concurrent=1",
               "--results-dir", root)
    assert dry.returncode == 0 and "0 already done, 1 would run" in dry.stdout, dry.stderr
    assert len([line for line in dry.stdout.splitlines() if "bits=32 sgd" in line]) == 1
    assert not (tmp_path / "run" / "trials" / "bits=32").exists()  # a dry run writes nothing
    _one_error_line(_run("resume", "smoke", "--set", "train.epochs=3", "--results-dir", root),
                    "changes what the trials of", "another --results-dir")
    _one_error_line(_run("resume", "smoke", "--set", "trian.epochs=3", "--results-dir", root),
                    "did you mean 'train'")


def test_milestones_past_the_last_epoch_are_warned_about():
    proc = _run("validate", "smoke", "--set", "train.epochs=1")
    assert proc.returncode == 0, proc.stderr
    assert "warning: train.milestones 2 (of 1 epochs) are after the last epoch" in proc.stderr
    quiet = _run("validate", "smoke")
    assert quiet.returncode == 0 and "warning" not in quiet.stderr


def test_show_prints_or_copies_a_shipped_sweep(tmp_path):
    shipped = (Path(__file__).resolve().parents[1] / "sweeps" / "smoke.toml").read_text()
    shown = _run("show", "smoke")
    assert shown.returncode == 0 and shown.stdout == shipped
    copied = _run("show", "smoke", "--copy", "mine.toml", cwd=tmp_path)
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "mine.toml").read_text() == shipped
    assert "qgen-sweep launch mine.toml" in copied.stdout
    _one_error_line(_run("show", "smoke", "--copy", "mine.toml", cwd=tmp_path),
                    "--copy mine.toml already exists")
    (tmp_path / "specs").mkdir()
    assert _run("show", "smoke-tpe", "--copy", "specs", cwd=tmp_path).returncode == 0
    assert (tmp_path / "specs" / "smoke-tpe.toml").is_file()
    _one_error_line(_run("show", "nosuch"), "no sweep named 'nosuch'", "smoke")
    assert _run("validate", str(tmp_path / "mine.toml")).returncode == 0


def test_query_names_the_missing_sql_and_has_a_paired_view(tmp_path):
    root = _known(tmp_path)
    for args in ((), ("tiny",)):
        _one_error_line(_run("query", *args, "--results-dir", str(root)), "no SQL statement given")
    proc = _run("query", "--results-dir", str(root), "--format", "json",
                "SELECT precision, count(*) AS n, sum(gap_diff) AS gap, sum(test_acc_diff) AS acc "
                "FROM paired GROUP BY ALL ORDER BY precision")
    assert proc.returncode == 0, proc.stderr
    rows = {r["precision"]: r for r in json.loads(proc.stdout)}
    report = json.loads(_run("report", "--results-dir", str(root), "--format", "json").stdout)
    for row in report["paired"]:
        pairs = rows[row["precision"]]
        assert pairs["n"] == row["n_pairs"]
        if row["metric"] == "gap":
            assert abs(pairs["gap"] / pairs["n"] - row["mean_diff"]) < 1e-9
        if row["metric"] == "test_acc":  # the view: a fraction; the report: percentage points
            assert abs(100 * pairs["acc"] / pairs["n"] - row["mean_diff"]) < 1e-9
    schema = _run("query", "--results-dir", str(root), "--schema", "--format", "json")
    described = {(r["view"], r["column"]): r["description"] for r in json.loads(schema.stdout)}
    assert described[("trials", "gap")].startswith("generalization gap: test_loss - train_loss")
    assert "fraction" in described[("paired", "test_acc_diff")]
    assert "interrupted" in described[("plan", "state")]
