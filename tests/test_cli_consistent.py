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
