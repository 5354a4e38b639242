"""One consistent command line, as a user runs it: real `qgen-sweep` subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
