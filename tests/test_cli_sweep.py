"""The sweep commands as a user runs them: real `qgen-sweep` subprocesses, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from sweep_helpers import TINY, cifar_file_names, trial_ids, write_faults

from qgen_sweep.spec import load_spec

QGEN = [sys.executable, "-m", "qgen_sweep.cli"]


def _run(*args: str, env: dict | None = None, timeout: float = 300):
    return subprocess.run([*QGEN, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_list_shows_every_sweep_with_counts():
    proc = _run("list")
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert "972 trials" in lines["cifar10-grid"] and "972 trials" in lines["cifar100-grid"]
    assert "972 trials" in lines["digits-grid"] and "16 trials" in lines["smoke"]


def test_validate_prints_counts_per_axis(tmp_path):
    proc = _run("validate", "cifar10-grid", env=cifar_file_names(tmp_path / "data"))
    assert proc.returncode == 0, proc.stderr
    assert "972 trials" in proc.stdout
    assert "3 per optimizer" in proc.stdout and "2: 243, 4: 243, 8: 243, 32: 243" in proc.stdout


def test_dry_run_shows_the_papers_972_trials_and_writes_nothing(tmp_path):
    env = cifar_file_names(tmp_path / "data")
    for sweep in ("cifar10-grid", "cifar100-grid"):
        out = tmp_path / sweep
        proc = _run("launch", sweep, "--dry-run", "--results-dir", str(out), env=env)
        assert proc.returncode == 0, proc.stderr
        assert f"{sweep}: 972 trials planned" in proc.stdout
        assert not out.exists()


def test_unknown_set_key_is_a_one_line_usage_error():
    proc = _run("launch", "smoke", "--dry-run", "--set", "trian.epochs=3")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "did you mean 'train'" in proc.stderr


def test_status_and_resume_without_a_launch_say_what_to_do(tmp_path):
    status = _run("status", "smoke", "--results-dir", str(tmp_path / "none"))
    assert status.returncode == 0 and "qgen-sweep launch" in status.stderr
    assert "all 16 planned trials are pending" in status.stderr and not (tmp_path / "none").exists()
    resume = _run("resume", "smoke", "--results-dir", str(tmp_path / "none"))
    assert resume.returncode == 2 and "no sweep.toml" in resume.stderr
    assert "Traceback" not in status.stderr + resume.stderr


def test_launch_is_refused_while_the_directory_is_locked(tmp_path):
    hold = ("import sys, time\nfrom qgen_sweep.store import SweepLock\n"
            "with SweepLock(sys.argv[1], 'launch smoke'):\n print('locked', flush=True)\n"
            " time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path)], text=True,
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = _run("launch", "smoke", "--results-dir", str(tmp_path), "--backend", "local")
        assert proc.returncode == 1
        assert f"locked by launch smoke (pid {holder.pid}" in proc.stderr
        assert proc.stderr.count("\n") == 1
    finally:
        holder.kill()
        holder.wait()


def test_launch_exit_codes_summary_and_status(tmp_path):
    spec = load_spec("smoke", list(TINY))
    failing = trial_ids(spec)[0]
    faults = write_faults(tmp_path / "faults.json",
                          [{"trial_id": failing, "epoch": 0, "times": "always"}])
    sets = [arg for item in TINY for arg in ("--set", item)]
    root = str(tmp_path / "run")
    first = _run("launch", "smoke", *sets, "--results-dir", root, "--backend", "local",
                 env={"QGEN_FAULT_INJECTION": str(faults)})
    assert first.returncode == 1, first.stderr
    assert "1 of 4 trials have no result" in first.stderr
    assert "summary" in first.stdout and f"trial {failing} failed: InjectedFault" in first.stdout
    status = json.loads(_run("status", "smoke", "--results-dir", root, "--format", "json").stdout)
    assert status["totals"]["failed"] == 1 and status["missing"] == 1
    assert status["failures"][0]["trial_id"] == failing
    again = _run("resume", "smoke", "--results-dir", root, "--backend", "local")
    assert again.returncode == 0, again.stderr
    status = json.loads(_run("status", "smoke", "--results-dir", root, "--format", "json").stdout)
    assert status["missing"] == 0 and status["totals"]["planned"] == 4
