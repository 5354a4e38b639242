"""Results store: atomic rows, corrupt-file detection, the sweep lock (also against a killed
holder), and status counts by precision. Real Parquet files and real processes."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from qgen_sweep.errors import StoreError
from qgen_sweep.plan import plan
from qgen_sweep.spec import load_spec
from qgen_sweep.store import (
    PLAN_SCHEMA,
    TRIAL_SCHEMA,
    ResultsStore,
    SweepLock,
    lock_holder,
    rows_to_table,
    sweep_status,
    write_attempts,
    write_table_atomic,
)

HOLD_LOCK = """
import sys, time
from qgen_sweep.store import SweepLock
with SweepLock(sys.argv[1], "launch test"):
    print("locked", flush=True)
    time.sleep(120)
"""


def _holder(root: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(root)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_lock_is_refused_with_the_holder_named(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(StoreError, match=r"locked by launch test \(pid \d+"), \
                SweepLock(tmp_path, "resume test"):
            pass
        assert lock_holder(tmp_path)["pid"] == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_process_does_not_block(tmp_path):
    proc = _holder(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert lock_holder(tmp_path) is None  # the kernel dropped the flock
    with SweepLock(tmp_path, "resume test"):
        assert lock_holder(tmp_path)["command"] == "resume test"
    assert lock_holder(tmp_path) is None


KILLED_WRITER = """
import sys, time
from pathlib import Path
from qgen_sweep.atomic import atomic_open
with atomic_open(Path(sys.argv[1])) as handle:
    handle.write(b"half a parquet file")
    handle.flush()
    print("writing", flush=True)
    time.sleep(120)
"""


def _killed_writer(target: Path) -> None:
    """A real writer SIGKILLed between mkstemp and os.replace: its temporary file survives."""
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_each_lock_removes_the_temporaries_killed_writers_left_in_its_own_folders(tmp_path):
    launch_owned = [tmp_path / "trials" / "bits=2" / "a.parquet",
                    tmp_path / "checkpoints" / "a" / "last.pt", tmp_path / "plan.parquet"]
    measure_owned = [tmp_path / "measures" / "bits=2" / "a.parquet"]
    for target in launch_owned + measure_owned:
        _killed_writer(target)
    assert len(list(tmp_path.rglob(".*.tmp"))) == 4
    with SweepLock(tmp_path, "resume test") as lock:
        assert lock.removed_temp_files == 3
    left = list(tmp_path.rglob(".*.tmp"))
    assert [p.parent.name for p in left] == ["bits=2"] and "measures" in str(left[0])
    with SweepLock(tmp_path, "measure", name="measure") as lock:
        assert lock.removed_temp_files == 1
    assert not list(tmp_path.rglob(".*.tmp"))
    assert not any(target.exists() for target in launch_owned + measure_owned)


def test_measure_lock_excludes_another_measure_but_not_a_launch(tmp_path):
    proc = _holder(tmp_path)  # a launch holds the sweep lock
    try:
        with SweepLock(tmp_path, "measure", name="measure"), \
                pytest.raises(StoreError, match=r"locked by measure \(pid \d+"), \
                SweepLock(tmp_path, "measure", name="measure"):
            pass
    finally:
        proc.kill()
        proc.wait()


def _trial_row(trial, status="done"):
    c = trial.config
    return {"trial_id": trial.trial_id, "sweep": "smoke", "dataset": c.dataset, "bits": c.bits,
            "optimizer": c.optimizer, "lr": c.lr, "lr_index": trial.lr_index, "status": status,
            "train_loss": 0.5, "test_loss": 0.7, "gap": 0.2, "engine": "single",
            "finished_at": dt.datetime.now(dt.UTC)}


def _store_with_plan(tmp_path) -> tuple[ResultsStore, list]:
    trials = plan(load_spec("smoke"))
    store = ResultsStore(tmp_path / "run")
    write_table_atomic(store.plan_path,
                       rows_to_table([t.plan_row("smoke") for t in trials], PLAN_SCHEMA))
    return store, trials


def test_status_counts_by_precision(tmp_path):
    store, trials = _store_with_plan(tmp_path)
    store.write_trial(_trial_row(trials[0]))
    store.write_trial(_trial_row(trials[1], status="diverged"))
    write_attempts(store, trials[2].trial_id, [{"attempt": 1}])  # started, no result
    write_attempts(store, trials[3].trial_id, [{"attempt": 1}])
    store.write_failure({"trial_id": trials[3].trial_id, "bits": trials[3].config.bits,
                         "attempt": 1, "error_type": "RuntimeError", "message": "boom",
                         "time": dt.datetime.now(dt.UTC)})
    status = sweep_status(store)
    assert status.totals == {"planned": 16, "done": 1, "collapsed": 0, "diverged": 1, "failed": 1,
                             "running": 0, "interrupted": 1, "pending": 12}
    assert status.by_bits[2]["done"] == 1 and status.by_bits[4]["diverged"] == 1
    assert status.missing == 14
    assert status.failures[0]["message"] == "boom"


def test_truncated_final_row_is_corrupt_and_not_done(tmp_path):
    store, trials = _store_with_plan(tmp_path)
    path = store.write_trial(_trial_row(trials[0]))
    assert store.finished_ids() == {trials[0].trial_id}
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert store.finished_ids() == set()
    assert store.corrupt_files() == [path]
    assert sweep_status(store).totals["pending"] == 16


def test_rows_keep_the_schema_and_reject_unknown_columns(tmp_path):
    store, trials = _store_with_plan(tmp_path)
    path = store.write_trial(_trial_row(trials[0]))
    assert pq.read_schema(path).names == TRIAL_SCHEMA.names
    with pytest.raises(StoreError, match="unknown result column"):
        store.write_trial({**_trial_row(trials[0]), "bogus": 1})


def test_status_without_plan_says_what_to_do(tmp_path):
    with pytest.raises(StoreError, match="qgen-sweep launch"):
        sweep_status(ResultsStore(tmp_path))


def test_status_counts_started_trials_as_running_while_locked(tmp_path):
    store, trials = _store_with_plan(tmp_path)
    write_attempts(store, trials[0].trial_id, [{"attempt": 1}])
    proc = _holder(store.root)
    try:
        deadline = time.monotonic() + 10
        while lock_holder(store.root) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        status = sweep_status(store)
        assert status.totals["running"] == 1 and status.locked_by["command"] == "launch test"
    finally:
        proc.kill()
        proc.wait()
