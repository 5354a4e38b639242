"""The lock covers the workers: a trial writes only while the launch that started it holds the
results directory; and an attempt that trained but could not write its final row says why.
Real `qgen-sweep` subprocesses (and a real Ray cluster for the driver kill)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sweep_helpers import TINY, failure_rows, final_rows, tiny_spec, trial_ids, write_faults

from qgen_sweep.store import ResultsStore, SweepLock, lease_held, lock_holder

QGEN = [sys.executable, "-m", "qgen_sweep.cli"]
SETS = [arg for item in TINY for arg in ("--set", item)]


def _cli(*args: str, faults: Path | None = None, timeout: float = 240):
    env = {k: v for k, v in os.environ.items() if k != "QGEN_FAULT_INJECTION"}
    if faults is not None:
        env["QGEN_FAULT_INJECTION"] = str(faults)
    return subprocess.run([*QGEN, *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_a_failed_final_row_write_is_a_failure_row_and_the_retry_finishes(tmp_path: Path):
    spec = tiny_spec()
    a, b, *_ = trial_ids(spec)
    faults = write_faults(tmp_path / "faults.json", [
        {"trial_id": a, "epoch": "final", "times": 1, "action": "raise"},
        {"trial_id": b, "epoch": "final", "times": "always", "action": "raise"},
    ])
    root = tmp_path / "r"
    proc = _cli("launch", "smoke", *SETS, "--backend", "local", "--results-dir", str(root),
                faults=faults)
    assert proc.returncode == 1, proc.stderr[-2000:]  # b has no result
    store = ResultsStore(root)
    failures = Counter((r["trial_id"], r["error_type"]) for r in failure_rows(store))
    assert failures == {(a, "InjectedFault"): 1, (b, "InjectedFault"): 2}  # max_failures = 1
    assert {r["trial_id"] for r in final_rows(store)} == set(trial_ids(spec)) - {b}
    status = json.loads(_cli("status", "smoke", "--results-dir", str(root), "--json").stdout)
    assert status["totals"]["failed"] == 1 and status["totals"]["interrupted"] == 0
    assert {f["trial_id"] for f in status["failures"]} == {b}


def test_a_trial_writes_nothing_once_its_launch_lost_the_lock(tmp_path: Path):
    """The lease: the token of the lock's holding, and (same host) its holder alive."""
    root = tmp_path / "r"
    with SweepLock(root, "launch smoke") as lock:
        assert lease_held(root, lock.token)
        assert not lease_held(root, "another launch")
        token = lock.token
    assert not lease_held(root, token)  # released
    with SweepLock(root, "resume smoke") as second:
        assert not lease_held(root, token) and lease_held(root, second.token)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    info = {"pid": dead.pid, "host": lock_holder.__globals__["socket"].gethostname(),
            "command": "launch smoke", "since": "", "token": "t"}
    (root / ".lock.json").write_text(json.dumps(info))  # what a SIGKILLed driver leaves
    assert not lease_held(root, "t")


def _mtimes(root: Path) -> dict[Path, int]:
    """Every row file and attempts log (what a trial writes), with its mtime."""
    paths = [p for folder in ("trials", "epochs", "failures")
             for p in (root / folder).rglob("*.parquet")]
    paths += (root / "checkpoints").glob("*/attempts.json")
    out = {}
    for path in paths:
        try:
            out[path] = path.stat().st_mtime_ns
        except FileNotFoundError:  # replaced between the listing and the stat
            continue
    return out


@pytest.mark.slow
def test_immediate_resume_after_sigkill_of_the_driver(tmp_path: Path):
    """Kill the driver mid-epoch and resume at once: the killed launch's Ray workers write no row
    after the kill, and the resume ends with exactly one final row per trial."""
    root = tmp_path / "r"
    faults = write_faults(tmp_path / "faults.json", [
        {"trial_id": "*", "epoch": e, "times": "always", "action": "pause", "seconds": 0.3}
        for e in range(1, 12)])
    args = ["launch", "smoke", "--results-dir", str(root), "--set", "train.epochs=12",
            "--set", "grid.width=[4]"]  # 8 trials, each ~0.3 s per epoch
    env = {**os.environ, "QGEN_FAULT_INJECTION": str(faults)}
    driver = subprocess.Popen([*QGEN, *args], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 240
        while len(list((root / "epochs").rglob("*.parquet"))) < 2:
            assert driver.poll() is None, driver.stderr.read().decode()
            assert time.monotonic() < deadline, "no trial trained an epoch in 240 s"
            time.sleep(0.1)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    killed = time.time_ns()
    resume_env = {k: v for k, v in os.environ.items() if k != "QGEN_FAULT_INJECTION"}
    resume = subprocess.Popen([*QGEN, "resume", "smoke", "--results-dir", str(root),
                               "--progress-interval", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=resume_env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(resume.stdout), daemon=True)
    reader.start()
    before = _mtimes(root)
    late: set[Path] = set()
    # until the resume's Ray is up (its first trial can start), every row write is an orphan's
    while not any("waiting for the first trial" in line for line in list(lines)) \
            and resume.poll() is None:
        late |= {p for p, m in _mtimes(root).items()
                 if before.get(p) != m and m > killed + 300_000_000}  # 0.3 s: writes under way
        time.sleep(0.05)
    resume.wait(timeout=300)
    reader.join(timeout=10)
    err = resume.stderr.read()
    assert resume.returncode == 0, err[-3000:]
    assert not late, f"the killed launch's workers wrote after the kill: {sorted(late)}"
    spec_ids = trial_ids(_saved(root))
    assert Counter(r["trial_id"] for r in final_rows(ResultsStore(root))) == Counter(spec_ids)
    assert len(spec_ids) == 8


def _saved(root: Path):
    from qgen_sweep.spec import saved_spec

    return saved_spec(root)


def test_sweep_toml_is_written_only_after_the_plan(tmp_path: Path):
    """A plan that cannot be stored leaves no sweep.toml, so the directory does not hold on to a
    sweep that never launched (a corrected spec is not refused afterwards)."""
    from qgen_sweep.launcher import LaunchOptions, run_sweep

    root = tmp_path / "r"
    (root / "plan.parquet").mkdir(parents=True)  # the plan's file cannot be replaced
    (root / "plan.parquet" / "keep").write_text("x")
    with pytest.raises(OSError):
        run_sweep(tiny_spec(), LaunchOptions(results_dir=root, backend="local"), "launch smoke")
    assert not (root / "sweep.toml").exists()
